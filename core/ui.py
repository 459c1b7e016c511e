"""Small Streamlit helpers shared by the pages (pickers, chat bubbles). Import streamlit lazily."""
from __future__ import annotations

# Navigation in one place: (file, sidebar title, icon, URL path). Streamlit's own sidebar list
# would call Home by its file name ("app"), so .streamlit/config.toml hides it and every page
# draws this one with sidebar_nav().
PAGES = [
    ("app.py", "Home", "🛠️", ""),
    ("pages/1_Data.py", "Data", "📚", "Data"),
    ("pages/2_Factory.py", "Factory", "🏭", "Factory"),
    ("pages/3_Sandbox.py", "Sandbox", "💬", "Sandbox"),
    ("pages/4_Scorecard.py", "Scorecard", "📊", "Scorecard"),
    ("pages/5_Costs.py", "Costs", "💰", "Costs"),
]


def sidebar_nav() -> None:
    """The page list at the top of the sidebar, Home first."""
    import streamlit as st

    with st.sidebar:
        for path, title, icon, _ in PAGES:
            try:
                st.page_link(path, label=title, icon=icon)
            except Exception:  # a page run on its own (AppTest.from_file): no page registry to link into
                st.markdown(f"{icon} {title}")
        st.divider()


def pick_dataset(key: str = "data") -> str | None:
    """Customer and dataset selectboxes; returns "customer/dataset" or None when there is none."""
    import streamlit as st

    from core.dataset import list_customers

    customers = {c.name: c for c in list_customers()}
    if not customers:
        st.warning("No customers found: add a folder under customers/ with a dataset.py.")
        return None
    default = st.query_params.get("customer")
    names = list(customers)
    name = st.selectbox("Customer", names, index=names.index(default) if default in names else 0,
                        format_func=lambda n: f"{n} — {customers[n].title}", key=f"{key}_customer")
    specs = customers[name].datasets()
    available = [k for k, s in specs.items() if s.available]
    for spec in specs.values():
        if not spec.available:
            st.caption(f"Dataset {spec.key} is unavailable: {spec.path} not found.")
    if not available:
        st.warning(f"{name} has no dataset files yet.")
        return None
    dataset = st.selectbox("Dataset", available, key=f"{key}_dataset")
    return f"{name}/{dataset}"


def chat_bubbles(messages: list[dict], highlight: int = -1) -> None:
    """Render a dialog as chat bubbles; the message at `highlight` is marked as the handoff point."""
    import streamlit as st

    avatars = {"user": "user", "assistant": "assistant", "system": "⚙️", "tool": "🛠️"}
    for i, msg in enumerate(messages):
        with st.chat_message(msg["role"], avatar=avatars.get(msg["role"])):
            if i == highlight:  # numbered from 1 like the bubbles; the stored index is 0-based
                st.error(f"**Human must take over here (message {i + 1}, index {i})**\n\n{msg['content']}")
            else:
                st.markdown(msg["content"] or "_(empty)_")


def show_checks(checks: list[dict], prefix: str = "") -> None:
    """Each check as failed (red), skipped / not judged (grey, never green) or a count of passes."""
    import streamlit as st

    from core.eval.report import check_state

    passed = 0
    for c in checks:
        state = check_state(c)
        if state == "fail":
            st.error(f"✗ {prefix}{c['name']}: {c['reason']}")
        elif state == "skipped":
            st.info(f"– skipped · {prefix}{c['name']}: {c['reason']}", icon="⏭️")
        else:
            passed += 1
    if passed:
        st.caption(f"✓ {passed} {prefix}check{'s' if passed > 1 else ''} passed")
