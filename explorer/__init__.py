"""The explorer app's logic (no Streamlit here).

Main page: ``runs`` (listing run folders), ``inference`` (encoding, ELBO terms, map
placement), ``live`` (slider decoding), ``figures`` (Plotly figures), ``uploads`` (user
images), ``server`` (a Streamlit server for tests and benchmarks). Lessons: ``iwae``,
``diagnostics``, ``generation``, ``compare``, ``export``, ``jobs``, ``lesson_figures``.

``streamlit_app.py`` and ``pages/*.py`` are thin UIs over these modules, which are unit
tested without a browser or a Streamlit server.
"""
