"""HTTP routes the app adds to Streamlit's server (``st.App(routes=...)``): the browser
downloads a run's ``decoder.onnx`` here, once per model (the URL carries the file's
SHA-256, so the browser may cache it for good). What may be served is decided by
``explorer/model_files.py``."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.shared import runs_dir
from explorer.model_files import MODEL_PREFIX, ModelFileError, read_model_file


async def _model_file(request: Request) -> Response:
    params = request.path_params
    try:
        data = await asyncio.to_thread(read_model_file, runs_dir(), params["run"],
                                       params["sha256"], params["file"])
    except ModelFileError as exc:
        return Response(str(exc), status_code=exc.status, media_type="text/plain")
    return Response(data, media_type="application/octet-stream",
                    headers={"Cache-Control": "public, max-age=31536000, immutable",
                             "X-Content-Type-Options": "nosniff"})


def routes() -> list[Route]:
    """The app's own routes, for ``st.App``."""
    return [Route(MODEL_PREFIX + "/{run}/{sha256}/{file}", _model_file, methods=["GET"])]
