"""The explorer app's logic (no Streamlit here).

Main page: ``runs`` (listing run folders), ``inference`` (encoding, ELBO terms, map
placement), ``onnx_model`` (the model through ONNX Runtime), ``nploss`` (ELBO terms in
NumPy), ``live`` (slider decoding), ``model_files`` (what the browser may download),
``figures`` (Plotly figures and PNGs), ``uploads`` (user images), ``server`` (a Streamlit
server for tests and benchmarks). Lessons: ``iwae``, ``diagnostics``, ``generation``, ``compare``,
``export``, ``jobs``, ``lesson_figures`` (latent maps), ``lesson_charts`` (the other
charts).

The UI in ``app/`` (``app/main_page.py``, the lesson and Train pages in ``app/pages/``,
listed by ``streamlit_app.py``) only lays out widgets over these modules, which are unit
tested without a browser or a Streamlit server.
"""


def __getattr__(name: str):  # ``explorer.adopt(model, images, ...)`` without importing torch
    if name == "adopt":  # until it is called (explorer/adopt.py imports it lazily)
        import importlib

        return importlib.import_module("explorer.adopt")
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")
