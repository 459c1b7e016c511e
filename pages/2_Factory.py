"""Factory: the model registry, a form to train (LoRA, prompt, provider tuning), live jobs and reports."""
from pathlib import Path

import pandas as pd
import streamlit as st

from core import factory, jobs, retirement
from core.factory import JobConfig, LoraSettings, PromptSettings, RemoteSettings
from core.ui import pick_dataset, sidebar_nav

st.set_page_config(page_title="Factory · CSForge", page_icon="🏭", layout="wide")
sidebar_nav()
st.title("Factory")
st.caption("Dataset + base model in, a registry entry with an access point out. Jobs run in the background; "
           "this page follows them and survives a reload.")


def field(model, name: str) -> tuple:
    """(default, help) of a config field: the page shows the same defaults and reasons as the CLI."""
    info = model.model_fields[name]
    return info.default, info.description


def show_report(path: str | None, where: str) -> None:
    """The Markdown report with its figures; files it links to become download buttons."""
    parts = factory.report_parts(path)
    if parts is None:
        st.info("No report for this one yet.")
        return
    for kind, value, extra in parts:
        if kind == "image":
            st.image(str(value), caption=extra)
            continue
        st.markdown(value)
        for label, file in extra:
            st.download_button(f"⬇ {label}", file.read_bytes(), file_name=file.name, key=f"dl-{where}-{file}")


def open_in(page: str, model: str) -> None:
    st.session_state["model"] = model
    st.query_params["model"] = model
    target = Path(__file__).parent / page
    if target.exists():
        st.switch_page(f"pages/{page}")
    else:
        st.info(f"{page} is not there yet; the model is selected for it ({model}).")


def launch(values: dict) -> None:
    """Pre-flight (refused with the reason and the fix), then start the job in the background."""
    from core import preflight

    try:
        config = factory.make_config(values)
        with st.spinner("Checking the launch (model, data, token budget)…"):
            problems = preflight.training(config)
        for p in problems:
            (st.error if p.severity == "error" else st.warning)(f"{p.what}\n\n**Fix:** {p.fix}")
        if any(p.severity == "error" for p in problems):
            st.error("Not launched: fix the problems above.")
            return
        job = factory.start(config, checked=True)
    except Exception as exc:  # a bad value is shown, not a crashed page
        st.error(f"Could not start: {exc}")
    else:
        st.session_state["factory_job"] = job.id
        st.success(f"Started job {job.id} ({job.name}); follow it on the Jobs tab.")


models_tab, train_tab, jobs_tab = st.tabs(["Models", "Train", "Jobs"])

# ---------------------------------------------------------------- registry
with models_tab:
    from core import registry

    reg = registry.load()
    for error in reg.errors:
        st.warning(error)
    retirement.show(reg.entries.values())  # retiring models: date + replacement
    table = pd.DataFrame([{"name": e.name, "type": e.type, "customer": e.customer or "", "base": e.base_model,
                           "access point": e.access_point, "status": e.status or "",
                           "epochs": (e.training or {}).get("epochs", {}).get("value"),
                           "val loss": ((e.training or {}).get("metrics") or {}).get("val_loss_after"),
                           "created": e.created_at} for e in reg.entries.values()])
    if table.empty:
        st.info("The registry is empty.")
    else:
        cols = st.columns(3)
        picks = {c: cols[n].multiselect(c.capitalize(), sorted(table[c].unique()), key=f"filter_{c}")
                 for n, c in enumerate(("type", "customer", "base"))}
        for column, chosen in picks.items():
            if chosen:
                table = table[table[column].isin(chosen)]
        st.dataframe(table, hide_index=True, width="stretch")
        if not table.empty:
            chosen = st.selectbox("Model", list(table["name"]), key="factory_model")
            left, right, _ = st.columns([1, 1, 3])
            if left.button("Open in Sandbox", key="to_sandbox"):
                open_in("3_Sandbox.py", chosen)
            if right.button("Open in Scorecard", key="to_scorecard"):
                open_in("4_Scorecard.py", chosen)
            with st.expander("Training report", expanded=False):
                show_report(((reg.entries[chosen].training or {}).get("report")), "model")

# ---------------------------------------------------------------- launch
with train_tab:
    key = pick_dataset("factory")
    if key:
        customer, dataset = key.split("/", 1)
        with st.form("launch"):
            method = st.radio("Backend", ["lora", "prompt", "remote"], horizontal=True, key="method",
                              help="lora: fine-tune locally · prompt: policy + few-shot prompt, no training · "
                                   "remote: a provider's OpenAI-compatible fine-tuning API")
            base_default, base_help = field(JobConfig, "base_model")
            base_model = st.text_input("Base model", base_default, help=base_help, key="base_model")
            name = st.text_input("Registry name", "", help="empty: customer-method-time", key="name")
            c1, c2, c3 = st.columns(3)
            epochs = c1.number_input("Epochs (0 = early stopping)", 0, 100, 0, key="epochs",
                                     help=field(JobConfig, "epochs")[1])
            intervention = c2.selectbox("At the human-intervention point", ["teach_handoff", "cut"], key="intervention",
                                        help=field(JobConfig, "intervention")[1])
            min_label = c3.number_input("Min label (0 = the customer's threshold)", 0.0, 1.0, 0.0, 0.05,
                                        key="min_label", help=field(JobConfig, "min_label")[1])
            c1, c2, c3 = st.columns(3)
            seed = c1.number_input("Seed", 0, 2**31, 0, key="seed", help=field(JobConfig, "seed")[1])
            max_conv = c2.number_input("Max conversations (0 = all)", 0, 10**6, 0, key="max_conversations",
                                       help=field(JobConfig, "max_conversations")[1])
            device = c3.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="device",
                                  help=field(JobConfig, "device")[1])
            with st.expander("LoRA hyperparameters"):
                c1, c2, c3, c4 = st.columns(4)
                lr = c1.number_input("Learning rate", 1e-6, 1.0, field(LoraSettings, "learning_rate")[0],
                                     format="%.0e", key="lr", help=field(LoraSettings, "learning_rate")[1])
                batch = c2.number_input("Batch size", 1, 512, field(LoraSettings, "batch_size")[0], key="batch",
                                        help=field(LoraSettings, "batch_size")[1])
                rank = c3.number_input("LoRA rank", 1, 256, field(LoraSettings, "r")[0], key="rank",
                                       help=field(LoraSettings, "r")[1])
                seq = c4.number_input("Max tokens", 16, 32768, field(LoraSettings, "max_seq_len")[0], key="seq",
                                      help=field(LoraSettings, "max_seq_len")[1])
                c1, c2, c3, c4 = st.columns(4)
                max_steps = c1.number_input("Max steps (-1 = none)", -1, 10**7, -1, key="max_steps",
                                            help=field(LoraSettings, "max_steps")[1])
                max_epochs = c2.number_input("Max epochs", 1, 100, field(LoraSettings, "max_epochs")[0],
                                             key="max_epochs", help=field(LoraSettings, "max_epochs")[1])
                patience = c3.number_input("Patience", 1, 100, field(LoraSettings, "patience")[0], key="patience",
                                           help=field(LoraSettings, "patience")[1])
                eval_steps = c4.number_input("Eval every N steps (0 = each epoch)", 0, 10**6, 0, key="eval_steps",
                                             help=field(LoraSettings, "eval_steps")[1])
            with st.expander("Prompt settings"):
                few = st.number_input("Few-shot examples", 0, 20, field(PromptSettings, "few_shot")[0], key="few",
                                      help=field(PromptSettings, "few_shot")[1])
            with st.expander("Remote provider"):
                base_url = st.text_input("API base URL", "", key="base_url", help=field(RemoteSettings, "base_url")[1])
                key_env = st.text_input("Key variable", field(RemoteSettings, "api_key_env")[0], key="key_env",
                                        help=field(RemoteSettings, "api_key_env")[1])
                provider_model = st.text_input("Provider base model", "", key="provider_model",
                                               help=field(RemoteSettings, "provider_model")[1])
                prefix = st.text_input("LiteLLM prefix", "", key="prefix", help=field(RemoteSettings, "access_prefix")[1])
            submitted = st.form_submit_button("Launch", type="primary")
        if submitted:
            values = {"customer": customer, "dataset": dataset, "method": method, "base_model": base_model,
                      "name": name or None, "epochs": epochs or None, "intervention": intervention,
                      "min_label": min_label or None, "seed": seed, "max_conversations": max_conv or None,
                      "device": device,
                      "lora": {"learning_rate": lr, "batch_size": batch, "r": rank, "max_seq_len": seq,
                               "max_steps": max_steps, "max_epochs": max_epochs, "patience": patience,
                               "eval_steps": eval_steps or None},
                      "prompt": {"few_shot": few},
                      "remote": {"base_url": base_url or None, "api_key_env": key_env,
                                 "provider_model": provider_model or None, "access_prefix": prefix or None}}
            launch(values)


# ---------------------------------------------------------------- jobs
def job_panel(job: jobs.Job) -> None:
    p = job.progress or {}
    total, step = p.get("total") or 0, p.get("step") or 0
    st.markdown(f"**{job.name}** · `{job.id}` · {job.status} · {p.get('stage', '')}")
    if total:
        st.progress(min(step / total, 1.0), text=f"step {step} / {total}")
    cols = st.columns(4)
    cols[0].metric("train loss", f"{p['train'][-1][1]:.4f}" if p.get("train") else "–")
    cols[1].metric("val loss", f"{p['val'][-1][1]:.4f}" if p.get("val") else "–")
    cols[2].metric("tokens/s", f"{p['tokens_per_s']:.0f}" if p.get("tokens_per_s") else "–")
    cols[3].metric("ETA", f"{p['eta_s']:.0f} s" if p.get("eta_s") is not None and job.active else "–")
    curves = [{"step": s, "loss": v, "curve": k} for k in ("train", "val") for s, v in p.get(k) or []]
    if curves:
        st.line_chart(pd.DataFrame(curves), x="step", y="loss", color="curve", height=220)
    if job.status == "cancelling":
        st.info("Cancelling: the job stops at its next step and keeps a checkpoint. A step can take minutes "
                "on a busy CPU: **Stop now** ends it at once, losing only the step in progress.", icon="⏳")
    if job.error and job.status == "failed":  # the reason once; the traceback and log folded away
        st.error(job.error.split("\n", 1)[0][:500])
    tail = jobs.log_tail(job, 15)
    if tail:
        with st.expander("Log tail", expanded=job.active):
            st.code(tail, language=None)
    buttons = st.columns(4)
    if job.status in ("queued", "running") and buttons[0].button("Cancel", key=f"cancel_{job.id}"):
        jobs.cancel(job.id)
        st.rerun()
    if job.status == "cancelling" and buttons[0].button("Stop now", key=f"stop_now_{job.id}"):
        jobs.stop_now(job.id)
        st.rerun()
    if factory.resumable(job) and buttons[1].button("Resume", key=f"resume_{job.id}"):
        factory.resume(job.id)
        st.rerun()


with jobs_tab:
    any_running = any(j.active for j in jobs.list_jobs(factory.KIND, limit=50))

    # Refresh every 2 s only while a job runs (no redraws, no flicker otherwise); when the last
    # one ends, a full rerun moves it to "Past jobs" and stops the timer.
    @st.fragment(run_every=2.0 if any_running else None)
    def live() -> None:
        running = [j for j in jobs.list_jobs(factory.KIND, limit=50) if j.active]
        if not running:
            st.caption("No job running.")
        for job in running:
            with st.container(border=True):
                job_panel(job)
        if bool(running) != any_running:
            st.rerun(scope="app")

    live()
    past = [j for j in jobs.list_jobs(factory.KIND, limit=50) if not j.active]
    if past:
        st.subheader("Past jobs")
        st.dataframe(pd.DataFrame([{"job": j.id, "name": j.name, "status": j.status,
                                    "method": j.config.get("method"), "customer": j.config.get("customer"),
                                    "wall s": round((j.result or {}).get("wall_s") or 0, 1)} for j in past]),
                     hide_index=True, width="stretch")
        picked = st.selectbox("Job", [j.id for j in past], key="past_job",
                              format_func=lambda i: next(f"{j.name} ({j.status}, {i})" for j in past if j.id == i))
        job = next(j for j in past if j.id == picked)
        job_panel(job)
        if job.result:
            show_report(job.result.get("report"), "job")
