"""The explorer app's logic (no Streamlit here): runs, inference, figures, uploads.

``streamlit_app.py`` and ``pages/*.py`` are thin UIs over these modules, which are unit
tested without a browser or a Streamlit server.
"""
