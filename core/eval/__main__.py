"""python -m core.eval ...: see core/eval/cli.py."""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from core.eval.cli import main  # noqa: E402

sys.exit(main())
