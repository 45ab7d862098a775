// A Plotly figure as a Streamlit component (components.v1, in an iframe), drawn with the
// light plotly.js build in this folder (plotly-basic: scatter, bar, pie; 1.2 MB instead of
// the 4.7 MB bundle st.plotly_chart loads, which a 2-core machine takes 1.8-2.2 s to evaluate).
// app_chart.py decides which figures come here. Protocol: Streamlit's component messages
// (what streamlit-component-lib sends), written out so there is nothing to build:
//   -> streamlit:componentReady, streamlit:setFrameHeight, streamlit:setComponentValue
//   <- streamlit:render {args: {spec, template, config, height}} (JSON strings, an int)
// A click on a point sends {selection: {points: [...], point_indices: [...], box: [],
// lasso: []}, event: n}: the shape of st.plotly_chart's selection state, plus a counter so
// that clicking the same point again is still news.
(function () {
  "use strict";
  let pending = null;  // the newest render args, kept until plotly.js has loaded
  let shownSpec = null;
  let shownTheme = "";
  let pendingTheme = null;
  let clicks = 0;
  let listening = false;
  let height = 0;

  function send(type, extra) {
    window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, extra),
                              "*");
  }

  function setHeight(h) {
    if (h !== height) { height = h; send("streamlit:setFrameHeight", { height: h }); }
  }

  function problem(text) {
    const box = document.getElementById("problem");
    box.textContent = text;
    box.style.display = "block";
    setHeight(box.offsetHeight + 4);
  }

  // The page's own font (Streamlit's), so the chart's text matches the text around it.
  function borrowFonts() {
    try {
      const body = getComputedStyle(window.parent.document.body);
      const unquote = function (name) { return name.trim().replace(/^["']|["']$/g, ""); };
      const families = new Set(body.fontFamily.split(",").map(unquote));
      const rules = [];
      for (const sheet of window.parent.document.styleSheets) {
        let list;
        try { list = sheet.cssRules; } catch (e) { continue; }
        const base = sheet.href || window.parent.location.href;
        for (const rule of list) {
          // only the body's fonts: not KaTeX's or the icon font
          if (rule.type !== CSSRule.FONT_FACE_RULE
              || !families.has(unquote(rule.style.getPropertyValue("font-family")))) continue;
          // url(...) in the rule is relative to its stylesheet, not to this document
          rules.push(rule.cssText.replace(/url\(\s*(["']?)([^"')]+)\1\s*\)/g,
            function (_, quote, url) { return 'url("' + new URL(url, base).href + '")'; }));
        }
      }
      const style = document.createElement("style");
      style.textContent = rules.join("\n");
      document.head.appendChild(style);
      return { family: body.fontFamily, color: body.color };
    } catch (e) {
      return null;  // a cross-origin parent: keep plotly's defaults
    }
  }

  // customdata from a base64 array arrives as a typed array, which JSON would turn into
  // {"0": .., "1": ..}: send a plain list (or the scalar) instead
  function plain(value) {
    if (value === undefined) return null;
    return ArrayBuffer.isView(value) ? Array.from(value) : value;
  }

  function selection(event) {
    const points = (event && event.points ? event.points : []).map(function (p) {
      return { curve_number: p.curveNumber, point_number: p.pointNumber,
               point_index: p.pointIndex, x: p.x, y: p.y,
               customdata: plain(p.customdata) };
    });
    return { points: points, point_indices: points.map(function (p) { return p.point_index; }),
             box: [], lasso: [] };
  }

  // Streamlit's dark theme: the figures are made for white paper (plot_bgcolor "white",
  // light grey grids); repaint their backgrounds, grids, text and buttons from the theme.
  function darken(layout, theme) {
    const bg = theme.backgroundColor || "#0e1117";
    const text = theme.textColor || "#fafafa";
    const grid = "rgba(250, 250, 250, 0.12)";
    layout.paper_bgcolor = "rgba(0,0,0,0)";
    layout.plot_bgcolor = bg;
    layout.font = Object.assign({}, layout.font, { color: text });
    for (const name of Object.keys(layout)) {
      if (!/^[xy]axis\d*$/.test(name)) continue;
      layout[name] = Object.assign({}, layout[name], {
        gridcolor: grid, linecolor: grid, zerolinecolor: "rgba(250, 250, 250, 0.25)",
        tickfont: Object.assign({}, (layout[name] || {}).tickfont, { color: text }) });
    }
    for (const menu of layout.updatemenus || []) {
      menu.bgcolor = theme.secondaryBackgroundColor || "#262730";
      menu.bordercolor = grid;
      menu.font = Object.assign({}, menu.font, { color: text });
    }
    for (const slider of layout.sliders || []) {
      slider.bgcolor = theme.secondaryBackgroundColor || "#262730";
      slider.bordercolor = grid;
      slider.tickcolor = text;
      if (!(slider.font && slider.font.color === "rgba(0,0,0,0)")) {
        slider.font = Object.assign({}, slider.font, { color: text });
      }
      slider.currentvalue = Object.assign({}, slider.currentvalue, {
        font: Object.assign({}, (slider.currentvalue || {}).font, { color: text }) });
    }
    if (layout.template && layout.template.layout) {
      layout.template.layout.hoverlabel = { bgcolor: bg, bordercolor: grid, font: { color: text } };
    }
  }

  function draw(args, theme) {
    const themeKey = theme ? theme.base + (theme.backgroundColor || "") : "";
    if (args.spec === shownSpec && themeKey === shownTheme) return;
    shownSpec = args.spec;
    shownTheme = themeKey;
    const figure = JSON.parse(args.spec);
    const layout = figure.layout || {};
    // Streamlit's own template only holds placeholder colours its frontend fills in
    if (args.template) layout.template = JSON.parse(args.template);
    if (theme && theme.base === "dark") darken(layout, theme);
    const chart = document.getElementById("chart");
    chart.style.height = args.height + "px";
    if (page && !(layout.font && layout.font.family)) {
      layout.font = Object.assign({ family: page.family, color: page.color }, layout.font);
      if (theme && theme.textColor) layout.font.color = theme.textColor;
    }
    // frames (an animated figure: the training film) travel with the figure; its
    // play button and epoch slider then animate in the browser
    Plotly.react(chart, { data: figure.data || [], layout: layout,
                          config: JSON.parse(args.config || "{}"),
                          frames: figure.frames || [] }).then(function () {
      if (!listening) {
        listening = true;
        chart.on("plotly_click", function (event) {
          clicks += 1;
          send("streamlit:setComponentValue",
               { value: { selection: selection(event), event: clicks }, dataType: "json" });
        });
      }
    }, function (err) { problem("The chart could not be drawn: " + err); });
  }

  window.addEventListener("message", function (event) {
    const data = event.data;
    if (!data || data.type !== "streamlit:render") return;
    const args = data.args || {};
    setHeight(args.height);  // at once, so the page does not jump when the chart appears
    if (window.Plotly) draw(args, data.theme); else { pending = args; pendingTheme = data.theme; }
  });

  const page = borrowFonts();
  const script = document.createElement("script");
  script.src = "plotly-basic.min.js";
  script.onload = function () { if (pending) { draw(pending, pendingTheme); pending = null; } };
  script.onerror = function () {
    problem("The chart library (plotly-basic.min.js) could not be loaded from the server.");
  };
  document.head.appendChild(script);
  send("streamlit:componentReady", { apiVersion: 1 });
})();
