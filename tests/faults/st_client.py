"""A minimal Streamlit websocket client for load tests: one browser session without a
browser. It speaks the app's own protocol (protobuf ``BackMsg`` / ``ForwardMsg`` over
``/_stcore/stream``): run the script, then set widget values by label and rerun, and
collects every element the server sends for each run (exceptions, error boxes, widgets,
markdown and HTML blocks), as a browser would render them.

Also what the classroom benchmark and the proxy tests need (``bench/classroom.py``,
``tests/test_serve.py``): any server URL and request headers (a proxy's session cookie),
the handshake's response headers, the session id, which ``st.fragment`` drew each element,
the latent lens's message (:meth:`Session.lens_release`, a fragment rerun, exactly what
the browser sends when a slider is released) and the file uploader's protocol
(:meth:`Session.upload_file_urls`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import websockets
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import FileUploaderState, FileURLsRequest, UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates

LENS_COMPONENT = "vae-latent-explorer.lens"  # app/lens: COMPONENT_NAME


@dataclass
class RunResult:
    """The elements of one script run (full or fragment)."""

    elements: list = field(default_factory=list)  # Element protos, in arrival order
    finished: int = -1  # ForwardMsg.ScriptFinishedStatus
    fragments: list = field(default_factory=list)  # per element: its st.fragment's id or ""
    received: int = 0  # bytes of the ForwardMsgs of this run
    cached: int = 0  # elements the server sent as references to this client's cache

    def fragment_of(self, element) -> str:
        """The id of the ``st.fragment`` that drew ``element`` ("" outside any fragment)."""
        for candidate, fragment in zip(self.elements, self.fragments, strict=True):
            if candidate is element:
                return fragment
        raise ValueError("element not in this run")

    def components(self, name: str) -> list[tuple]:
        """The components-v2 elements of component ``name``: (Element proto, its JSON data
        as a dict) each, in page order."""
        found = []
        for element in self.elements:
            if element.WhichOneof("type") == "bidi_component" and \
                    element.bidi_component.component_name == name:
                proto = element.bidi_component
                found.append((element, json.loads(proto.json) if proto.json else {}))
        return found

    def lens(self, role: str = "lens") -> tuple:
        """The latent lens's main element (``role="lens"``: z, sliders, decoder, server
        image) or its map (``role="map"``): (Element proto, its data)."""
        for element, data in self.components(LENS_COMPONENT):
            if data.get("role", "lens") == role:
                return element, data
        raise AssertionError(f"no latent lens ({role}) in this run")

    def of_type(self, kind: str) -> list:
        return [getattr(e, kind) for e in self.elements if e.WhichOneof("type") == kind]

    @property
    def exceptions(self) -> list[str]:
        return [f"{x.type}: {x.message}\n" + "\n".join(x.stack_trace)
                for x in self.of_type("exception")]

    @property
    def errors(self) -> list[str]:
        return [a.body for a in self.of_type("alert") if a.format == Alert.ERROR]

    def markdown(self) -> list[str]:
        return [m.body for m in self.of_type("markdown")]

    def html(self) -> list[str]:
        return [h.body for h in self.of_type("html")]

    def widget(self, kind: str, label: str):
        found = [w for w in self.of_type(kind) if w.label == label]
        if not found:
            raise AssertionError(f"no {kind} labelled {label!r} in this run")
        return found[-1]


class Session:
    """One user's session on ``ws://host:port/_stcore/stream``."""

    def __init__(self, port: int | None = None, *, url: str | None = None,
                 headers: dict[str, str] | None = None, open_timeout: float = 60):
        """``port`` of a server on 127.0.0.1, or the ``url`` of its stream (``ws://host:port
        /_stcore/stream``, e.g. through a proxy); ``headers``: sent with the handshake
        (``Cookie``: a proxy's session affinity)."""
        if url is None and port is None:
            raise ValueError("Session needs a port or a url")
        self.url = url or f"ws://127.0.0.1:{port}/_stcore/stream"
        self.headers = dict(headers or {})
        self.open_timeout = open_timeout
        self.ws = None
        self.widgets: dict[str, WidgetState] = {}  # what the browser would send back
        self.clicks = 0  # app_chart's click counter: each new click is a new event
        self.lens_events = 0  # the latent lens's message counter ("event")
        self.session_id = ""  # from the server's new_session message
        # Streamlit's message cache, as the browser keeps it: large elements the server
        # marked cacheable, by hash; their hashes go with every rerun, and the server then
        # sends a reference (ref_hash) instead of an element the browser already has.
        self.cache: dict[str, ForwardMsg] = {}
        self.response_headers: dict[str, str] = {}  # the handshake's (lower-case names)
        self._requests = 0

    async def __aenter__(self) -> Session:
        self.ws = await websockets.connect(self.url, subprotocols=["streamlit"],
                                           additional_headers=self.headers or None,
                                           max_size=64 * 1024 * 1024,
                                           open_timeout=self.open_timeout)
        response = getattr(self.ws, "response", None)
        if response is not None:
            self.response_headers = {k.lower(): v for k, v in response.headers.raw_items()}
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()

    async def rerun(self, timeout: float = 180, fragment_id: str = "") -> RunResult:
        """Send the widget states (a rerun of the page, or only of the ``st.fragment``
        ``fragment_id``, as the browser does for a widget inside one) and collect the run."""
        state = ClientState(query_string="", page_script_hash="", fragment_id=fragment_id,
                            widget_states=WidgetStates(widgets=list(self.widgets.values())),
                            cached_message_hashes=list(self.cache))
        await self.ws.send(BackMsg(rerun_script=state).SerializeToString())
        result = await asyncio.wait_for(self._collect(), timeout)
        self._adopt(result)
        return result

    async def lens_release(self, run: RunResult, z: list[float], timeout: float = 180,
                           source: str = "slider", **update) -> RunResult:
        """What the latent lens (``app/lens``) sends when a slider is released: its state
        ``{"update": {"z": z, "selected": None, "source": "slider", "event": n}}`` on its
        element id, rerunning only the lens's fragment. ``run``: a run that drew the lens."""
        element, _data = run.lens()
        widget_id = element.bidi_component.id
        self.lens_events += 1
        value = {"z": [float(v) for v in z], "selected": None, "source": source,
                 "event": self.lens_events, **update}
        self.widgets[widget_id] = WidgetState(id=widget_id,
                                              json_value=json.dumps({"update": value}))
        return await self.rerun(timeout, fragment_id=run.fragment_of(element))

    async def upload_file_urls(self, names: list[str], timeout: float = 60) -> list:
        """Ask for upload URLs as the file uploader does before it PUTs the files; returns
        the server's ``FileURLs`` (``file_id``, ``upload_url``, ``delete_url``)."""
        self._requests += 1
        request_id = f"upload-{self._requests}"
        await self.ws.send(BackMsg(file_urls_request=FileURLsRequest(
            request_id=request_id, file_names=names, session_id=self.session_id)
        ).SerializeToString())

        async def answer():
            while True:
                msg = ForwardMsg()
                msg.ParseFromString(await self.ws.recv())
                if msg.WhichOneof("type") == "file_urls_response" and \
                        msg.file_urls_response.response_id == request_id:
                    return msg.file_urls_response

        response = await asyncio.wait_for(answer(), timeout)
        if response.error_msg:
            raise RuntimeError(f"file_urls_request refused: {response.error_msg}")
        return list(response.file_urls)

    def set_uploaded_file(self, run: RunResult, label: str, file_urls, name: str,
                          size: int) -> None:
        """The file uploader labelled ``label`` now holds the file PUT to ``file_urls``
        (from :meth:`upload_file_urls`); the next :meth:`rerun` sends it."""
        uploader = run.widget("file_uploader", label)
        state = FileUploaderState(uploaded_file_info=[UploadedFileInfo(
            name=name, size=size, file_id=file_urls.file_id, file_urls=file_urls)])
        self.widgets[uploader.id] = WidgetState(id=uploader.id,
                                                file_uploader_state_value=state)

    def _adopt(self, run: RunResult) -> None:
        """Remember slider and number values as the browser does: a value the server set
        (``set_value``) replaces ours, a new widget starts at its default, and every
        widget's value is sent back with each rerun."""
        for slider in run.of_type("slider"):
            if slider.set_value or slider.id not in self.widgets:
                state = WidgetState(id=slider.id)
                state.double_array_value.data[:] = list(slider.value if slider.set_value
                                                        else slider.default)
                self.widgets[slider.id] = state
        for box in run.of_type("number_input"):
            if box.set_value or box.id not in self.widgets:
                value = box.value if box.set_value else box.default
                self.widgets[box.id] = (WidgetState(id=box.id, int_value=int(value))
                                        if box.data_type == box.INT else
                                        WidgetState(id=box.id, double_value=float(value)))

    async def _collect(self) -> RunResult:
        result = RunResult()
        while True:
            msg = ForwardMsg()
            data = await self.ws.recv()
            result.received += len(data)
            msg.ParseFromString(data)
            kind = msg.WhichOneof("type")
            if kind == "ref_hash":  # an element this client has: the cached copy
                if msg.ref_hash not in self.cache:
                    raise AssertionError(f"server referred to an uncached message "
                                         f"{msg.ref_hash}")
                result.cached += 1
                msg = self.cache[msg.ref_hash]
                kind = msg.WhichOneof("type")
            elif msg.metadata.cacheable and msg.hash:
                self.cache[msg.hash] = msg
            if kind == "new_session":
                self.session_id = msg.new_session.initialize.session_id
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                result.elements.append(msg.delta.new_element)
                result.fragments.append(msg.delta.fragment_id)
            elif kind == "script_finished":
                result.finished = msg.script_finished
                if msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    return result

    async def set_slider(self, run: RunResult, label: str, value: float) -> RunResult:
        slider = run.widget("slider", label)
        self.widgets[slider.id] = WidgetState(id=slider.id)
        self.widgets[slider.id].double_array_value.data[:] = [value]
        return await self.rerun()

    async def select_point(self, run: RunResult, chart_key: str, point: dict) -> RunResult:
        """Click one point of the Plotly chart with widget key ``chart_key``: the selection
        event the browser sends (``point``: x, y, curve_number, point_index, customdata), as
        ``st.plotly_chart`` sends it or as ``app_chart``'s component does (the same
        selection plus a click counter, as a JSON widget value)."""
        selection = {"selection": {"points": [point], "point_indices": [point["point_index"]],
                                   "box": [], "lasso": []}}
        charts = [c for c in run.of_type("plotly_chart") if c.id.endswith(f"-{chart_key}")]
        if charts:
            self.widgets[charts[-1].id] = WidgetState(id=charts[-1].id,
                                                      string_value=json.dumps(selection))
            return await self.rerun()
        light = [c for c in run.of_type("component_instance")
                 if c.component_name == "app.chart.plotly_chart" and chart_key in c.id]
        if not light:
            raise AssertionError(f"no selectable chart with key {chart_key!r}")
        self.clicks += 1
        self.widgets[light[-1].id] = WidgetState(
            id=light[-1].id, json_value=json.dumps({**selection, "event": self.clicks}))
        return await self.rerun()

    async def set_number(self, run: RunResult, label: str, value: int) -> RunResult:
        box = run.widget("number_input", label)
        self.widgets[box.id] = WidgetState(id=box.id, int_value=value)
        return await self.rerun()
