"""A minimal Streamlit websocket client for load tests: one browser session without a
browser. It speaks the app's own protocol (protobuf ``BackMsg`` / ``ForwardMsg`` over
``/_stcore/stream``): run the script, then set widget values by label and rerun, and
collects every element the server sends for each run (exceptions, error boxes, widgets,
markdown and HTML blocks), as a browser would render them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import websockets
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates


@dataclass
class RunResult:
    """The elements of one script run (full or fragment)."""

    elements: list = field(default_factory=list)  # Element protos, in arrival order
    finished: int = -1  # ForwardMsg.ScriptFinishedStatus

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

    def __init__(self, port: int):
        self.url = f"ws://127.0.0.1:{port}/_stcore/stream"
        self.ws = None
        self.widgets: dict[str, WidgetState] = {}  # what the browser would send back
        self.clicks = 0  # app_chart's click counter: each new click is a new event

    async def __aenter__(self) -> Session:
        self.ws = await websockets.connect(self.url, subprotocols=["streamlit"],
                                           max_size=64 * 1024 * 1024, open_timeout=60)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()

    async def rerun(self, timeout: float = 180) -> RunResult:
        state = ClientState(query_string="", page_script_hash="",
                            widget_states=WidgetStates(widgets=list(self.widgets.values())))
        await self.ws.send(BackMsg(rerun_script=state).SerializeToString())
        result = await asyncio.wait_for(self._collect(), timeout)
        self._adopt(result)
        return result

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
            msg.ParseFromString(await self.ws.recv())
            kind = msg.WhichOneof("type")
            if kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                result.elements.append(msg.delta.new_element)
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
