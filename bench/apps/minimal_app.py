"""Minimal one-slider decode app (baseline for bench/app_latency.py)."""

import sys

import numpy as np
import streamlit as st
import torch

from training.rundir import load_run


@st.cache_resource
def model():
    torch.set_num_threads(1)
    return load_run(sys.argv[1]).model


vae = model()
z0 = st.slider("z0", -3.0, 3.0, 0.0, 0.01, key="z0")
z = torch.zeros(1, vae.latent_dim)
z[0, 0] = z0
with torch.no_grad():
    image = torch.sigmoid(vae.decode(z))[0, 0].numpy()
st.image(np.kron(image, np.ones((8, 8))), caption="decoded", clamp=True)
