"""The cold-start floor of any Streamlit page (baseline for bench/app_latency.py): a title
and one slider."""

import streamlit as st

st.title("Trivial")
st.slider("z0", -3.0, 3.0, 0.0, 0.01, key="z0")
