"""The cold-start floor of any Streamlit page with one Plotly chart (baseline for
bench/app_latency.py): the run's 1,000 latent means as the same WebGL scatter, a title and
one slider; no model, no torch, nothing cached."""

import sys

import numpy as np
import plotly.graph_objects as go
import streamlit as st

with np.load(sys.argv[1] + "/latents.npz") as latents:
    mu, labels = latents["mu"], latents["labels"]
st.title("Plotly floor")
st.slider("z0", -3.0, 3.0, 0.0, 0.01, key="z0")
st.plotly_chart(go.Figure(go.Scattergl(x=mu[:, 0], y=mu[:, 1], mode="markers",
                                       marker=dict(color=labels))))
