"""The latent lens: a browser component that draws the latent map, the latent sliders and
the decoded image, and decodes z **in the browser** (onnxruntime-web, WebAssembly) on
every pointer or key event, at most once per animation frame.

Why: since Streamlit 1.48 ``st.slider`` reports only on release, so a server-side decode
cannot morph the digit while a slider is dragged. Here the decoder (``decoder.onnx`` of
the run) runs next to the sliders; Python hears from the component only when an
interaction ends (slider release, the pointer leaving the map, a click), once per burst.

:func:`latent_lens` only shapes data and mounts the component (``st.components.v2``,
files in ``frontend/``; ``frontend/vendor/onnxruntime-web`` is refreshed by
``scripts/vendor_onnxruntime_web.sh``). The component's value, in
``st.session_state[key]["update"]`` and returned::

    {"z": [float, ...], "selected": int | None, "source": "slider" | "lens" | "click",
     "event": int}   # event: increases by one per message

``selected`` is a row of the map's arrays (``xy``, ``labels``, ``mu``), not
``point_index``. z from Python: pass the current z and bump ``z_version`` whenever
*Python* sets it (a button, a newly selected sample); otherwise the component keeps its
own z across reruns. ``server_png`` (the server's decode of ``z``) is shown until the
in-browser decoder is ready, and for good when it cannot start (no WebAssembly, a
failed fetch, a decode error; the component then says so once and reports on release).

Asset serving: Streamlit serves a v2 component's files only for a component that has an
``asset_dir`` in a ``[tool.streamlit.component]`` manifest of an *installed*
distribution. Streamlit 1.67's scanner does not find this project's manifest (it looks
for ``pyproject.toml`` inside the installed package; measured: neither an editable nor
a wheel install of a root-level table is discovered), so :func:`latent_lens` registers
``frontend/`` as the asset directory itself on the running Streamlit runtime. If that
ever fails, the component's JS and CSS go inline and the component runs with server
decoding only.

For benchmarks and tests the component's root element (``.latent-lens[data-key=KEY]``,
inside the component's shadow root) carries ``data-runtime`` ("loading" | "wasm" |
"server"), ``data-decodes`` (browser decodes so far) and ``data-decoded-z`` (JSON of the
z last drawn); the decoded image is the ``canvas.lens-image`` (H x W, read it with
``getImageData``); ``window.__latentLens[KEY].timings()`` returns the last 512 decodes as
``{type, t_first, t_last, t_painted, decode_ms}`` (``performance.now()`` clock: event
timestamps of the oldest and newest input event the frame served, and the time right
after ``putImageData``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import streamlit as st

COMPONENT_NAME = "vae-latent-explorer.lens"  # "<project>.<component>", as a manifest would name it
PROJECT = "vae-latent-explorer"
FRONTEND = Path(__file__).resolve().parent / "frontend"
JS_FILE = "lens.js"
CSS_FILE = "lens.css"
# Tableau 10, the app's class palette (explorer/figures.PALETTE)
TABLEAU10 = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
             "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
PROJECTIONS = ("raw", "pca", "tsne")
# The component's state key. Not "value": Streamlit 1.67 unwraps a state that is exactly
# {"value": dict} and then looks for callbacks named after the inner keys, so
# on_value_change never ran (measured: the callback was skipped on every message).
STATE_KEY = "update"
MAX_POINTS = 50_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{3,8}$")
_MAP_CACHE: OrderedDict[str, dict[str, Any]] = OrderedDict()  # map digest -> encoded payload
_MAP_CACHE_SIZE = 4


# --------------------------------------------------------------------------- encoding

def encode_array(values: Any, dtype: Literal["f4", "i4"] = "f4") -> str:
    """Base64 of the little-endian float32 (``"f4"``) or int32 (``"i4"``) bytes of
    ``values``, C order (the JS side reads them with ``Float32Array``/``Int32Array``)."""
    array = np.ascontiguousarray(np.asarray(values), dtype="<" + dtype)
    return base64.b64encode(array.tobytes()).decode("ascii")


def decode_array(text: str, dtype: Literal["f4", "i4"] = "f4",
                 shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Inverse of :func:`encode_array` (for tests and debugging)."""
    array = np.frombuffer(base64.b64decode(text), dtype="<" + dtype)
    return array.reshape(shape) if shape is not None else array


def _float_array(name: str, values: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """``values`` as a finite float64 array of ``shape`` (None: any length), or ValueError."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"latent_lens: {name} must be numbers, got {type(values).__name__}"
                         ) from exc
    if array.ndim != len(shape) or any(want is not None and got != want
                                       for got, want in zip(array.shape, shape, strict=True)):
        dims = ["N" if s is None else str(s) for s in shape]
        want = f"({dims[0]},)" if len(dims) == 1 else "(" + ", ".join(dims) + ")"
        raise ValueError(f"latent_lens: {name} must have shape {want}, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"latent_lens: {name} has NaN or infinite values")
    return array


def _int_array(name: str, values: Any, length: int) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != (length,):
        raise ValueError(f"latent_lens: {name} must have shape ({length},), got {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(array == np.round(array)):
            raise ValueError(f"latent_lens: {name} must be integers")
    array = array.astype(np.int64)
    if array.size and (array.min() < -2**31 or array.max() >= 2**31):
        raise ValueError(f"latent_lens: {name} does not fit in int32")
    return array


def map_payload(*, projection: str, xy: Any, labels: Any, latent_dim: int,
                class_names: Sequence[str] | None = None, colours: Sequence[str] | None = None,
                point_index: Any = None, recon_nats: Any = None, kl_nats: Any = None,
                pca_mean: Any = None, pca_components: Any = None, mu: Any = None,
                x_title: str = "", y_title: str = "") -> dict[str, Any]:
    """The map's data as the component reads it: arrays as base64 little-endian float32 /
    int32, plus ``hash``, a digest of everything here (the browser re-parses the map only
    when it changes). Validates shapes; raises ValueError naming the argument."""
    if projection not in PROJECTIONS:
        raise ValueError(f"latent_lens: projection must be one of {PROJECTIONS}, "
                         f"got {projection!r}")
    xy_arr = _float_array("xy", xy, (None, 2))
    n = len(xy_arr)
    if n > MAX_POINTS:
        raise ValueError(f"latent_lens: at most {MAX_POINTS} map points, got {n}")
    label_arr = _int_array("labels", labels, n)
    if n and label_arr.min() < 0:
        raise ValueError("latent_lens: labels must be >= 0 (class ids)")
    n_classes = int(label_arr.max()) + 1 if n else 0
    names = [str(c) for c in class_names] if class_names is not None else \
        [str(i) for i in range(n_classes)]
    if len(names) < n_classes:
        raise ValueError(f"latent_lens: class_names has {len(names)} names but labels go up "
                         f"to {n_classes - 1}")
    palette = list(colours) if colours is not None else list(TABLEAU10)
    if not palette or not all(isinstance(c, str) and _COLOUR.match(c) for c in palette):
        raise ValueError("latent_lens: colours must be CSS hex colours like '#4e79a7'")
    arrays: dict[str, tuple[np.ndarray, Literal["f4", "i4"]]] = {
        "xy": (xy_arr, "f4"), "labels": (label_arr, "i4")}
    if point_index is not None:
        arrays["index"] = (_int_array("point_index", point_index, n), "i4")
    if recon_nats is not None:
        arrays["recon"] = (_float_array("recon_nats", recon_nats, (n,)), "f4")
    if kl_nats is not None:
        arrays["kl"] = (_float_array("kl_nats", kl_nats, (n,)), "f4")
    if projection == "pca":
        if pca_mean is None or pca_components is None:
            raise ValueError("latent_lens: projection='pca' needs pca_mean and pca_components")
        arrays["pca_mean"] = (_float_array("pca_mean", pca_mean, (latent_dim,)), "f4")
        arrays["pca_components"] = (
            _float_array("pca_components", pca_components, (2, latent_dim)), "f4")
    if projection == "tsne":
        if mu is None:
            raise ValueError("latent_lens: projection='tsne' needs mu (N, D), the latent means "
                             "of the map's points")
        if n == 0:
            raise ValueError("latent_lens: projection='tsne' needs at least one point")
        arrays["mu"] = (_float_array("mu", mu, (n, latent_dim)), "f4")
    elif mu is not None:  # checked, not sent: only the t-SNE lens needs it
        _float_array("mu", mu, (n, latent_dim))
    if projection == "raw" and latent_dim < 2:
        raise ValueError("latent_lens: projection='raw' needs latent_dim >= 2")

    digest = hashlib.blake2b(digest_size=16)
    meta = {"projection": projection, "n": n, "class_names": names, "colours": palette,
            "x_title": str(x_title), "y_title": str(y_title), "latent_dim": latent_dim}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for name, (array, dtype) in sorted(arrays.items()):
        raw = np.ascontiguousarray(array, dtype="<" + dtype)
        digest.update(name.encode() + b"\0" + raw.tobytes())
    key = digest.hexdigest()
    cached = _MAP_CACHE.get(key)
    if cached is not None:
        _MAP_CACHE.move_to_end(key)
        return cached
    payload = {**meta, "hash": key,
               **{name: encode_array(array, dtype) for name, (array, dtype) in arrays.items()}}
    _MAP_CACHE[key] = payload
    while len(_MAP_CACHE) > _MAP_CACHE_SIZE:
        _MAP_CACHE.popitem(last=False)
    return payload


def _check_url(url: str) -> str:
    """A URL on the app's own server: a path (``/runs/x/decoder.onnx``, ``files/x``), no
    scheme, no host. The browser must never fetch from anywhere else."""
    if not isinstance(url, str) or not url or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url) \
            or url.startswith(("//", "\\")) or any(c in url for c in "\r\n\t\\"):
        raise ValueError(f"latent_lens: decoder_url must be a path on the app's own server "
                         f"(like '/lens-files/<run>/decoder.onnx'), got {url!r}")
    return url


def lens_data(*, key: str, decoder_url: str | None, decoder_sha256: str,
              image_shape: Sequence[int], latent_dim: int, z: Sequence[float],
              lo: Sequence[float], hi: Sequence[float],
              output: Literal["logits", "probabilities"] = "logits",
              decoder_b64: str | None = None, z_version: int = 0,
              order: Sequence[int] | None = None, visible: int | None = None,
              slider_help: Sequence[str] | None = None, server_png: str | None = None,
              map_data: dict[str, Any] | None = None, selected: int | None = None,
              sigma: Sequence[float] | None = None, upload_xy: Sequence[float] | None = None,
              height: int = 400, last_event: int = 0) -> dict[str, Any]:
    """The component's whole ``data`` argument (JSON-serialisable); validates everything.
    :func:`latent_lens` calls it; tests call it directly."""
    if not isinstance(key, str) or not key:
        raise ValueError("latent_lens: key must be a non-empty string")
    if not isinstance(latent_dim, (int, np.integer)) or latent_dim < 1:
        raise ValueError(f"latent_lens: latent_dim must be a positive int, got {latent_dim!r}")
    latent_dim = int(latent_dim)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"latent_lens: image_shape must be (C, H, W), got {tuple(image_shape)}")
    if shape[0] not in (1, 3):
        raise ValueError(f"latent_lens: images must have 1 or 3 channels, got C={shape[0]}")
    if output not in ("logits", "probabilities"):
        raise ValueError(f"latent_lens: output must be 'logits' or 'probabilities', "
                         f"got {output!r}")
    if not isinstance(decoder_sha256, str) or not _SHA256.match(decoder_sha256):
        raise ValueError("latent_lens: decoder_sha256 must be the 64-digit lowercase hex "
                         "SHA-256 of the decoder.onnx bytes")
    if decoder_url is not None:
        _check_url(decoder_url)
    if decoder_b64 is not None:
        try:
            base64.b64decode(decoder_b64[:64] + "=" * (-len(decoder_b64[:64]) % 4),
                             validate=True)
        except (ValueError, TypeError) as exc:
            raise ValueError("latent_lens: decoder_b64 must be base64 text") from exc
    z_arr = _float_array("z", z, (latent_dim,))
    lo_arr = _float_array("lo", lo, (latent_dim,))
    hi_arr = _float_array("hi", hi, (latent_dim,))
    if np.any(lo_arr >= hi_arr):
        bad = int(np.argmax(lo_arr >= hi_arr))
        raise ValueError(f"latent_lens: lo must be below hi in every dimension "
                         f"(z{bad}: {lo_arr[bad]} >= {hi_arr[bad]})")
    order_list = list(range(latent_dim)) if order is None else [int(i) for i in order]
    if sorted(order_list) != list(range(latent_dim)):
        raise ValueError(f"latent_lens: order must be a permutation of 0..{latent_dim - 1}")
    n_visible = min(latent_dim, 6) if visible is None else int(visible)
    if not 0 <= n_visible <= latent_dim:
        raise ValueError(f"latent_lens: visible must be in 0..{latent_dim}, got {visible}")
    helps = [""] * latent_dim if slider_help is None else [str(h) for h in slider_help]
    if len(helps) != latent_dim:
        raise ValueError(f"latent_lens: slider_help needs {latent_dim} strings, "
                         f"got {len(helps)}")
    if server_png is not None and not (isinstance(server_png, str)
                                       and server_png.startswith("data:image/")):
        raise ValueError("latent_lens: server_png must be a data:image/... URI")
    n_points = map_data["n"] if map_data is not None else 0
    if selected is not None and not 0 <= int(selected) < n_points:
        raise ValueError(f"latent_lens: selected={selected} is not a row of the map "
                         f"(0..{n_points - 1})")
    sigma_list = None if sigma is None else _float_array("sigma", sigma, (2,)).tolist()
    upload_list = None if upload_xy is None else _float_array("upload_xy", upload_xy,
                                                                (2,)).tolist()
    if map_data is not None and map_data["latent_dim"] != latent_dim:
        raise ValueError("latent_lens: the map was built for another latent_dim")
    if not isinstance(height, (int, np.integer)) or not 120 <= height <= 2000:
        raise ValueError(f"latent_lens: height must be 120..2000 px, got {height!r}")
    return {
        "id": key,
        "model": {"url": decoder_url, "sha256": decoder_sha256, "b64": decoder_b64,
                  "shape": list(shape), "output": output, "latent_dim": latent_dim},
        "z": z_arr.tolist(), "z_version": int(z_version),
        "sliders": {"lo": lo_arr.tolist(), "hi": hi_arr.tolist(), "order": order_list,
                    "visible": n_visible, "help": helps},
        "server_png": server_png,
        "map": map_data,
        "selected": None if selected is None else int(selected),
        "sigma": sigma_list, "upload_xy": upload_list,
        "height": int(height), "last_event": int(last_event),
    }


# --------------------------------------------------------------------------- mounting

_mount: Callable[..., Any] | None = None
_mount_inline: Callable[..., Any] | None = None


def _serve_assets() -> bool:
    """Make the running Streamlit runtime serve ``frontend/`` under
    ``/_stcore/bidi-components/vae-latent-explorer.lens/``; True when it does."""
    try:
        from streamlit.components.v2.manifest_scanner import ComponentConfig, ComponentManifest
        from streamlit.runtime import Runtime

        if not Runtime.exists():
            return False
        manager = Runtime.instance().bidi_component_registry
        if manager.get_component_asset_root(COMPONENT_NAME) is None:
            manifest = ComponentManifest(
                name=PROJECT, version="0",
                components=[ComponentConfig(name=COMPONENT_NAME.split(".", 1)[1],
                                            asset_dir=FRONTEND.name)])
            manager.register_from_manifest(manifest, FRONTEND.parent)
        return manager.get_component_asset_root(COMPONENT_NAME) is not None
    except Exception:  # another Streamlit version: inline assets, server decoding
        return False


def _component() -> Callable[..., Any]:
    global _mount, _mount_inline
    if _serve_assets():
        if _mount is None:
            _mount = st.components.v2.component(COMPONENT_NAME, js=JS_FILE, css=CSS_FILE)
        return _mount
    if _mount_inline is None:
        _mount_inline = st.components.v2.component(
            COMPONENT_NAME + "-inline", js=(FRONTEND / JS_FILE).read_text("utf-8"),
            css=(FRONTEND / CSS_FILE).read_text("utf-8"))
    return _mount_inline


def _previous_event(key: str) -> int:
    try:
        state = st.session_state[key]
        value = state.get(STATE_KEY) if hasattr(state, "get") else None
        return int(value["event"]) if isinstance(value, dict) else 0
    except (KeyError, TypeError, ValueError, AttributeError):
        return 0


def lens_map(*, key: str, projection: Literal["raw", "pca", "tsne"], xy: Any, labels: Any,
             latent_dim: int, class_names: Sequence[str] | None = None,
             colours: Sequence[str] | None = None, point_index: Any = None,
             recon_nats: Any = None, kl_nats: Any = None, pca_mean: Any = None,
             pca_components: Any = None, mu: Any = None, x_title: str = "",
             y_title: str = "") -> dict[str, Any]:
    """Mount the map's arrays (an element of their own, with no DOM, under ``key + "-map"``)
    and return the reference that :func:`latent_lens` takes as ``map_ref``. Call it outside
    the ``st.fragment`` that holds the lens: the fragment's reruns (one per slider release)
    then neither rebuild, hash nor send the arrays (the arguments as for ``latent_lens``)."""
    map_data = _payload_of(projection=projection, xy=xy, labels=labels,
                           latent_dim=latent_dim, class_names=class_names, colours=colours,
                           point_index=point_index, recon_nats=recon_nats, kl_nats=kl_nats,
                           pca_mean=pca_mean, pca_components=pca_components, mu=mu,
                           x_title=x_title, y_title=y_title)
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    if get_script_run_ctx(suppress_warning=True) is not None:
        _component()(key=f"{key}-map", data={"role": "map", "map": map_data})
    return _map_ref(map_data)


def _payload_of(*, xy: Any, labels: Any, **map_args: Any) -> dict[str, Any]:
    """:func:`map_payload`, every point in class 0 when there are no labels."""
    if labels is None:
        labels = np.zeros(len(np.asarray(xy)), dtype=np.int64)
    return map_payload(xy=xy, labels=labels, **map_args)


def _map_ref(map_data: dict[str, Any]) -> dict[str, Any]:
    return {"hash": map_data["hash"], "n": map_data["n"], "projection": map_data["projection"],
            "latent_dim": map_data["latent_dim"]}


def latent_lens(*, key: str, decoder_url: str | None, decoder_sha256: str,
                image_shape: Sequence[int], latent_dim: int, z: Sequence[float],
                lo: Sequence[float], hi: Sequence[float],
                output: Literal["logits", "probabilities"] = "logits",
                decoder_b64: str | None = None, z_version: int = 0,
                order: Sequence[int] | None = None, visible: int | None = None,
                slider_help: Sequence[str] | None = None, server_png: str | None = None,
                projection: Literal["raw", "pca", "tsne"] = "raw", xy: Any = None,
                labels: Any = None, class_names: Sequence[str] | None = None,
                colours: Sequence[str] | None = None, point_index: Any = None,
                recon_nats: Any = None, kl_nats: Any = None, pca_mean: Any = None,
                pca_components: Any = None, mu: Any = None, selected: int | None = None,
                sigma: Sequence[float] | None = None, upload_xy: Sequence[float] | None = None,
                x_title: str = "", y_title: str = "", height: int = 400,
                map_ref: dict[str, Any] | None = None,
                on_change: Callable[[], None] | None = None) -> dict[str, Any] | None:
    """Mount the latent lens; return its last value (see the module docstring) or None.

    Model: ``decoder_url`` (a path on the app's own server, e.g. served through
    ``st.App(routes=...)``) or ``decoder_b64`` (the ONNX bytes inline, for tiny models),
    ``decoder_sha256`` (hex SHA-256 of those bytes: the browser fetches and compiles the
    model once per sha256 and keeps the session across reruns; it checks the digest where
    the page is a secure context), ``image_shape`` (C, H, W) with C in {1, 3}, ``output``
    ("logits": the browser applies the sigmoid). Neither URL nor bytes: server decoding.

    Sliders: ``z`` (D,) and ``z_version`` (bump it when Python sets z), per-dimension
    bounds ``lo``/``hi``, ``order`` (most active dimension first), ``visible`` (shown up
    front; the rest behind "more dimensions"), ``slider_help`` (tooltip text per dim).
    ``server_png``: a ``data:image/png;base64,...`` decode of ``z`` by the server.

    Map (optional: ``xy=None`` shows sliders and image only): ``projection``, ``xy``
    (N, 2), ``labels`` (N,) class ids, ``class_names``, ``colours`` (per class),
    hover text from ``point_index`` (N,), ``recon_nats`` (N,), ``kl_nats`` (N,);
    ``pca_mean`` (D,) and ``pca_components`` (2, D) for PCA; ``mu`` (N, D) for t-SNE;
    ``selected`` (a row), ``sigma`` (2,) posterior std of the selected sample (1σ/2σ
    ellipses, raw axes only), ``upload_xy`` (2,) a ★ marker; axis titles; ``height`` of
    the map in CSS px. Text from data is always shown as text, never as HTML. Or
    ``map_ref``, what :func:`lens_map` returned for a map mounted outside this call's
    fragment (then the map arguments here are ignored).

    ``on_change`` runs (as a widget callback, before the rerun) when a new value arrives.
    """
    map_data = None
    if map_ref is not None:
        map_data = dict(map_ref)
    elif xy is not None:
        map_data = _payload_of(projection=projection, xy=xy, labels=labels,
                               latent_dim=latent_dim, class_names=class_names, colours=colours,
                               point_index=point_index, recon_nats=recon_nats, kl_nats=kl_nats,
                               pca_mean=pca_mean, pca_components=pca_components, mu=mu,
                               x_title=x_title, y_title=y_title)
    if map_data is not None and map_data["projection"] != "raw":
        sigma = None  # ellipses only where the map's axes are latent axes
    data = lens_data(key=key, decoder_url=decoder_url, decoder_sha256=decoder_sha256,
                     image_shape=image_shape, latent_dim=latent_dim, z=z, lo=lo, hi=hi,
                     output=output, decoder_b64=decoder_b64, z_version=z_version, order=order,
                     visible=visible, slider_help=slider_help, server_png=server_png,
                     map_data=map_data, selected=selected, sigma=sigma, upload_xy=upload_xy,
                     height=height, last_event=0)

    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    if get_script_run_ctx(suppress_warning=True) is None:  # bare Python: nothing to mount
        return None
    data["last_event"] = _previous_event(key)
    mount = _component()
    if map_data is not None:
        # The map's arrays go in an element of their own whose data does not change from
        # rerun to rerun (mounted below, or by lens_map outside the fragment); the lens's
        # own data only names the map's hash.
        data["map"] = {k: map_data[k] for k in ("hash", "n", "projection")}
    if map_data is None or map_ref is not None:
        result = mount(key=key, data=data, on_update_change=on_change or _no_op)
    else:
        with st.container(gap=None):
            result = mount(key=key, data=data, on_update_change=on_change or _no_op)
            mount(key=f"{key}-map", data={"role": "map", "map": map_data})
    value = result.get(STATE_KEY) if result is not None else None
    return value if isinstance(value, dict) else None


def _no_op() -> None:
    """A state needs a callback to be reported (Streamlit's rule); this one does nothing."""


__all__ = ["latent_lens", "lens_map", "lens_data", "map_payload", "encode_array", "decode_array",
           "COMPONENT_NAME", "FRONTEND", "TABLEAU10"]
