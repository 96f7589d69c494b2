// The Correct page's editor: a Streamlit components.v2 module (plain JavaScript, no build step).
//
// It shows the image (by URL, fetched once) with the outlines of the objects as they stand after
// the edits (a one-bit PNG the page sends after every edit, from core.objects.edited_labels), and
// draws edits over it. Every stroke is kept in image coordinates ([x, y] = [col, row], pixel
// (i, j) covering [j, j + 1) x [i, i + 1)), so zooming and panning never change one. After every
// change the whole list goes to Python as the `strokes` state, {doc, items}: a rerun that
// coalesces two changes loses neither, and `doc` (image, version) keeps an old list from landing
// on another image. The page keeps the list in its session and sends it back in `data.strokes`;
// the editor takes it when `data.doc` names another list (a new image, a save, a discard), and
// otherwise keeps its own, which is never behind.
//
// Mouse: the tool's gesture with the left button; drag with the Pan tool, with Space held, or
// with the middle or right button to pan; the wheel zooms about the pointer. Touch: one finger
// draws, two pan and pinch. Keys (not while typing in a field): P F E D S H pick a tool,
// Ctrl+Z / Ctrl+Shift+Z (or Ctrl+Y) undo and redo, + - 0 zoom and fit, [ ] brush size,
// Enter closes a polygon, Esc drops it, Backspace takes back its last corner.
//
// data = {doc, image, width, height, url, outlines, outline_color, colors: {tool: colour},
//         strokes: [...], applied: [ids], before, after, error}

const EDITORS = new WeakMap();
const MAX_SCALE = 32; // screen px per image px at the closest zoom
const CLOSE_PX = 6; // a click this close (screen px) to a polygon's first corner closes it
const STEP_PX = 1.5; // freehand points closer than this on screen are skipped
const TOOLS = [
  // [name, edit kind, title, key]
  ["polygon", "add", "Add a cell: click its corners, then the first one (or Enter)", "P"],
  ["freehand", "add", "Add a cell: draw round it", "F"],
  ["erase", "erase", "Erase with a brush", "E"],
  ["delete", "delete", "Delete an object: click inside it", "D"],
  ["split", "split", "Split cells: drag a line between them", "S"],
  ["pan", null, "Pan: drag the image (or hold Space, or use the right button)", "H"],
];
const LABELS = { polygon: "Polygon", freehand: "Freehand", erase: "Erase", delete: "Delete",
                 split: "Split", pan: "Pan" };

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let editor = EDITORS.get(parentElement);
  if (!editor) {
    editor = createEditor(parentElement);
    EDITORS.set(parentElement, editor);
  }
  editor.send = (value) => setStateValue("strokes", value);
  editor.update(data || {});
  return editor.detach;
}

const CSS = `
.ct-editor { width: 100%; user-select: none; -webkit-user-select: none; }
.ct-editor .ct-bar { display: flex; flex-wrap: wrap; gap: 4px; align-items: center;
  margin-bottom: 4px; }
.ct-editor .ct-group { display: flex; gap: 2px; align-items: center; margin-right: 6px; }
.ct-editor button { min-width: 2rem; height: 2rem; border-radius: 0.4rem; cursor: pointer;
  border: 1px solid rgba(128, 128, 128, 0.5); background: transparent; color: inherit;
  font-size: 0.85rem; line-height: 1; padding: 0 0.45rem; }
.ct-editor button[aria-pressed="true"] { background: rgba(255, 75, 75, 0.9); color: #fff;
  border-color: transparent; }
.ct-editor button:disabled { opacity: 0.4; cursor: default; }
.ct-editor .ct-status { font-size: 0.85rem; opacity: 0.85; white-space: nowrap; }
.ct-editor .ct-error { color: #ff6b6b; }
.ct-editor .ct-stage { width: 100%; background: #111; border-radius: 0.5rem; overflow: hidden;
  line-height: 0; }
.ct-editor canvas { display: block; touch-action: none; cursor: crosshair; outline: none; }
.ct-editor.ct-pan canvas { cursor: grab; }
.ct-editor.ct-panning canvas { cursor: grabbing; }
`;

function button(parent, text, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.title = title;
  b.setAttribute("aria-label", title);
  b.addEventListener("click", (evt) => {
    evt.preventDefault();
    onClick();
  });
  parent.appendChild(b);
  return b;
}

function group(parent) {
  const g = document.createElement("div");
  g.className = "ct-group";
  parent.appendChild(g);
  return g;
}

function typing(target) {
  if (!target || !target.closest) return false;
  return Boolean(target.closest("input, textarea, select, [contenteditable=''], "
    + "[contenteditable='true']"));
}

function rgba(hex, alpha) {
  const h = (hex || "#ffffff").replace("#", "");
  const n = parseInt(h.length === 3 ? h.replace(/(.)/g, "$1$1") : h, 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function createEditor(root) {
  const box = document.createElement("div");
  box.className = "ct-editor";
  box.setAttribute("data-testid", "ctCorrectEditor");
  const style = document.createElement("style");
  style.textContent = CSS; // class names are prefixed, so nothing else on the page is styled
  box.appendChild(style);
  const bar = document.createElement("div");
  bar.className = "ct-bar";
  box.appendChild(bar);
  const stage = document.createElement("div");
  stage.className = "ct-stage";
  box.appendChild(stage);
  const canvas = document.createElement("canvas");
  canvas.tabIndex = 0;
  canvas.setAttribute("aria-label", "Image to correct");
  canvas.setAttribute("data-testid", "ctCorrectCanvas");
  stage.appendChild(canvas);
  root.appendChild(box);
  const ctx = canvas.getContext("2d");

  const v = {
    doc: null, image: null, W: 1, H: 1, cssW: 0, cssH: 0, dpr: 1,
    strokes: [], redo: [], applied: new Set(), draft: null, hover: null,
    tool: "polygon", brush: 16, view: null, colors: {}, outlineColor: "#ffff00",
    bg: null, bgUrl: null, edge: null, edgeUrl: null, pooled: new Map(),
    pan: null, pinch: null, pointers: new Map(), space: false, frame: 0, serial: 0, edgeLoads: 0,
    before: null, after: null, error: null, send: () => {},
  };

  // ---------------------------------------------------------------- toolbar
  const toolGroup = group(bar);
  const toolButtons = {};
  for (const [name, , title, key] of TOOLS) {
    toolButtons[name] = button(toolGroup, LABELS[name], `${title} (key ${key})`,
      () => setTool(name));
  }
  const brushGroup = group(bar);
  button(brushGroup, "−", "Smaller brush (key [)", () => setBrush(v.brush / 1.25));
  const brushLabel = document.createElement("span");
  brushLabel.className = "ct-status";
  brushGroup.appendChild(brushLabel);
  button(brushGroup, "+", "Larger brush (key ])", () => setBrush(v.brush * 1.25));
  const historyGroup = group(bar);
  const undoButton = button(historyGroup, "Undo", "Undo (Ctrl+Z)", undo);
  const redoButton = button(historyGroup, "Redo", "Redo (Ctrl+Shift+Z)", redo);
  const viewGroup = group(bar);
  button(viewGroup, "−", "Zoom out (key -)", () => zoomBy(1 / 1.5));
  button(viewGroup, "+", "Zoom in (key +)", () => zoomBy(1.5));
  button(viewGroup, "Fit", "Fit the image (key 0)", fit);
  const status = document.createElement("span");
  status.className = "ct-status";
  status.setAttribute("data-testid", "ctCorrectStatus");
  bar.appendChild(status);

  function setTool(name) {
    if (v.draft && name !== v.tool) v.draft = null;
    v.tool = name;
    refreshBar();
    redraw();
  }

  function setBrush(px) {
    v.brush = Math.min(Math.max(px, 2), 120);
    refreshBar();
    redraw();
  }

  function refreshBar() {
    for (const [name, b] of Object.entries(toolButtons)) {
      b.setAttribute("aria-pressed", String(name === v.tool));
    }
    brushGroup.style.display = v.tool === "erase" ? "" : "none";
    brushLabel.textContent = `${Math.round(v.brush)} px`;
    undoButton.disabled = !v.strokes.length && !v.draft;
    redoButton.disabled = !v.redo.length;
    box.classList.toggle("ct-pan", v.tool === "pan" || v.space);
    const waiting = v.strokes.some((s) => !v.applied.has(s.id));
    const n = v.strokes.length;
    const parts = [];
    if (v.before !== null && v.after !== null) parts.push(`${v.before} → ${v.after} objects`);
    parts.push(`${n} edit${n === 1 ? "" : "s"}${waiting ? ", updating…" : ""}`);
    status.textContent = parts.join(" · ");
    status.classList.toggle("ct-error", Boolean(v.error));
    if (v.error) status.textContent += ` · ${v.error}`;
  }

  // ---------------------------------------------------------------- the view
  function fit() {
    const s = Math.min(v.cssW / v.W, v.cssH / v.H);
    v.view = { s, tx: (v.cssW - v.W * s) / 2, ty: (v.cssH - v.H * s) / 2 };
    redraw();
  }

  function clampView() {
    const fitS = Math.min(v.cssW / v.W, v.cssH / v.H);
    const s = Math.min(Math.max(v.view.s, fitS / 2), MAX_SCALE);
    // Keep at least a third of the canvas showing image.
    const w = v.W * s;
    const h = v.H * s;
    const tx = Math.min(Math.max(v.view.tx, v.cssW / 3 - w), (2 * v.cssW) / 3);
    const ty = Math.min(Math.max(v.view.ty, v.cssH / 3 - h), (2 * v.cssH) / 3);
    v.view = { s, tx, ty };
  }

  function zoomBy(factor, cx, cy) {
    const px = cx ?? v.cssW / 2;
    const py = cy ?? v.cssH / 2;
    const { s, tx, ty } = v.view;
    const ns = Math.min(Math.max(s * factor, 1e-3), MAX_SCALE);
    v.view = { s: ns, tx: px - ((px - tx) * ns) / s, ty: py - ((py - ty) * ns) / s };
    clampView();
    redraw();
  }

  function layout() {
    const cssW = Math.max(Math.floor(stage.clientWidth || root.clientWidth || 600), 120);
    const tall = Math.max(220, Math.round(window.innerHeight * 0.66));
    const cssH = Math.max(160, Math.min(Math.round((cssW * v.H) / v.W), tall));
    const dpr = window.devicePixelRatio || 1;
    if (cssW === v.cssW && cssH === v.cssH && dpr === v.dpr) return;
    const old = v.view && v.cssW ? { cx: v.cssW / 2, cy: v.cssH / 2 } : null;
    v.cssW = cssW;
    v.cssH = cssH;
    v.dpr = dpr;
    canvas.style.width = `${cssW}px`;
    canvas.style.height = `${cssH}px`;
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    if (!v.view) {
      fit();
    } else if (old) { // keep the image point at the centre where it was
      v.view.tx += cssW / 2 - old.cx;
      v.view.ty += cssH / 2 - old.cy;
      clampView();
    }
  }

  function toImage(evt) {
    const r = canvas.getBoundingClientRect();
    const { s, tx, ty } = v.view;
    return [(evt.clientX - r.left - tx) / s, (evt.clientY - r.top - ty) / s];
  }

  function onCanvas(evt) {
    const r = canvas.getBoundingClientRect();
    return [evt.clientX - r.left, evt.clientY - r.top];
  }

  // ---------------------------------------------------------------- drawing
  function redraw() {
    if (v.view) { // the view, for tests: screen px per image px, the image origin on the canvas
      const { s, tx, ty } = v.view;
      box.dataset.view = `${s.toFixed(4)},${tx.toFixed(2)},${ty.toFixed(2)}`;
    }
    if (v.frame) return;
    v.frame = requestAnimationFrame(() => {
      v.frame = 0;
      paint();
    });
  }

  function pooledEdges(f) {
    // Outlines for a view below one screen px per image px: an f x f block is an outline pixel
    // when any of its pixels is, so a one-pixel line never thins away when scaled down.
    if (!v.edge) return null;
    let c = v.pooled.get(f);
    if (c) return c;
    const { W, H } = v;
    const w = Math.ceil(W / f);
    const h = Math.ceil(H / f);
    const on = new Uint8Array(w * h);
    const a = v.edge.alpha;
    for (let y = 0; y < H; y++) {
      const row = ((y / f) | 0) * w;
      const base = y * W;
      for (let x = 0; x < W; x++) if (a[base + x]) on[row + ((x / f) | 0)] = 1;
    }
    c = document.createElement("canvas");
    c.width = w;
    c.height = h;
    const cx = c.getContext("2d");
    const img = cx.createImageData(w, h);
    const n = parseInt(v.outlineColor.replace("#", ""), 16);
    for (let i = 0; i < on.length; i++) {
      if (!on[i]) continue;
      img.data[4 * i] = (n >> 16) & 255;
      img.data[4 * i + 1] = (n >> 8) & 255;
      img.data[4 * i + 2] = n & 255;
      img.data[4 * i + 3] = 255;
    }
    cx.putImageData(img, 0, 0);
    v.pooled.set(f, c);
    return c;
  }

  function tracePath(points, closed) {
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (closed) ctx.closePath();
  }

  function paintStroke(stroke, strength) {
    const { s } = v.view;
    const kind = stroke.tool;
    const colour = v.colors[kind] || "#ffffff";
    const pts = stroke.points;
    if (!pts.length) return;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    if (kind === "add") {
      tracePath(pts, !stroke.open);
      if (!stroke.open) {
        ctx.fillStyle = rgba(colour, 0.25 * strength);
        ctx.fill();
      }
      if (strength >= 1) { // once applied, the cell's own outline is the line to see
        ctx.strokeStyle = rgba(colour, strength);
        ctx.lineWidth = 1.5 / s;
        ctx.stroke();
      }
    } else if (kind === "erase") {
      ctx.strokeStyle = rgba(colour, 0.45 * strength);
      ctx.lineWidth = stroke.width;
      tracePath(pts.length === 1 ? [pts[0], pts[0]] : pts, false);
      ctx.stroke();
    } else if (kind === "split") {
      ctx.strokeStyle = rgba(colour, strength);
      ctx.lineWidth = Math.max(1, 2 / s);
      tracePath(pts, false);
      ctx.stroke();
    } else if (kind === "delete") {
      const [x, y] = pts[0];
      const r = 5 / s;
      ctx.strokeStyle = rgba(colour, strength);
      ctx.lineWidth = 2 / s;
      ctx.beginPath();
      ctx.moveTo(x - r, y - r);
      ctx.lineTo(x + r, y + r);
      ctx.moveTo(x + r, y - r);
      ctx.lineTo(x - r, y + r);
      ctx.stroke();
    }
  }

  function paint() {
    const { s, tx, ty } = v.view;
    const d = v.dpr;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(d * s, 0, 0, d * s, d * tx, d * ty);
    ctx.imageSmoothingEnabled = s * d < 1;
    if (v.bg && v.bg.complete && v.bg.naturalWidth) ctx.drawImage(v.bg, 0, 0, v.W, v.H);
    ctx.imageSmoothingEnabled = false;
    if (v.edge) {
      const f = Math.ceil(1 / (s * d));
      if (f <= 1) {
        ctx.drawImage(v.edge.image, 0, 0, v.W, v.H);
      } else {
        const c = pooledEdges(f);
        ctx.drawImage(c, 0, 0, c.width * f, c.height * f);
      }
    }
    // Strokes the outlines already show are drawn faintly; the others (on their way) fully.
    for (const stroke of v.strokes) paintStroke(stroke, v.applied.has(stroke.id) ? 0.35 : 1);
    if (v.draft) {
      const pts = v.draft.points;
      const live = v.tool === "polygon" && v.hover ? [...pts, v.hover] : pts;
      paintStroke({ ...v.draft, points: live, open: v.tool === "polygon" }, 1);
      if (v.tool === "polygon" && pts.length) { // the first corner, where a click closes
        ctx.fillStyle = v.colors.add || "#00e040";
        ctx.beginPath();
        ctx.arc(pts[0][0], pts[0][1], 4 / s, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    if (v.tool === "erase" && v.hover) {
      ctx.strokeStyle = "rgba(255, 255, 255, 0.8)";
      ctx.lineWidth = 1 / s;
      ctx.beginPath();
      ctx.arc(v.hover[0], v.hover[1], v.brush / s / 2, 0, 2 * Math.PI);
      ctx.stroke();
    }
    refreshBar();
  }

  // ---------------------------------------------------------------- strokes
  function round(points) {
    return points.map(([x, y]) => [Math.round(x * 100) / 100, Math.round(y * 100) / 100]);
  }

  function publish() {
    v.send({ doc: v.doc, items: v.strokes });
    refreshBar();
    redraw();
  }

  function commit(stroke) {
    v.serial += 1;
    const id = `${Date.now().toString(36)}-${v.serial}`;
    v.strokes = [...v.strokes, { id, tool: stroke.tool, points: round(stroke.points),
                                 width: Math.round((stroke.width || 1) * 100) / 100 }];
    v.redo = [];
    v.draft = null;
    publish();
  }

  function closePolygon() {
    if (!v.draft || v.tool !== "polygon") return;
    if (v.draft.points.length >= 3) commit(v.draft);
    else v.draft = null;
    redraw();
  }

  function undo() {
    if (v.draft) {
      if (v.tool === "polygon" && v.draft.points.length > 1) v.draft.points.pop();
      else v.draft = null;
      redraw();
      return;
    }
    if (!v.strokes.length) return;
    v.redo = [...v.redo, v.strokes[v.strokes.length - 1]];
    v.strokes = v.strokes.slice(0, -1);
    publish();
  }

  function redo() {
    if (!v.redo.length) return;
    v.strokes = [...v.strokes, v.redo[v.redo.length - 1]];
    v.redo = v.redo.slice(0, -1);
    publish();
  }

  // ---------------------------------------------------------------- pointer
  function startPan(evt) {
    v.pan = { id: evt.pointerId, x: evt.clientX, y: evt.clientY, tx: v.view.tx, ty: v.view.ty };
    box.classList.add("ct-panning");
  }

  canvas.addEventListener("contextmenu", (evt) => evt.preventDefault());
  canvas.addEventListener("pointerdown", (evt) => {
    canvas.focus({ preventScroll: true });
    v.pointers.set(evt.pointerId, onCanvas(evt));
    canvas.setPointerCapture(evt.pointerId);
    if (v.pointers.size === 2) { // two fingers: pan and pinch, and no stroke
      if (v.draft && v.tool !== "polygon") v.draft = null;
      v.pan = null;
      const [a, b] = [...v.pointers.values()];
      v.pinch = { d: Math.hypot(a[0] - b[0], a[1] - b[1]) || 1,
                  mx: (a[0] + b[0]) / 2, my: (a[1] + b[1]) / 2 };
      redraw();
      return;
    }
    if (v.pointers.size > 2) return;
    if (evt.button === 1 || evt.button === 2 || v.tool === "pan" || v.space) {
      startPan(evt);
      return;
    }
    if (evt.button !== 0) return;
    const p = toImage(evt);
    if (v.tool === "polygon") {
      if (!v.draft) {
        v.draft = { tool: "add", points: [p] };
      } else {
        const [x0, y0] = v.draft.points[0];
        const near = Math.hypot((x0 - p[0]) * v.view.s, (y0 - p[1]) * v.view.s) <= CLOSE_PX;
        if (near && v.draft.points.length >= 3) closePolygon();
        else v.draft.points.push(p);
      }
    } else if (v.tool === "freehand") {
      v.draft = { tool: "add", points: [p] };
    } else if (v.tool === "erase") {
      v.draft = { tool: "erase", points: [p], width: v.brush / v.view.s };
    } else if (v.tool === "split") {
      v.draft = { tool: "split", points: [p, p] };
    } else if (v.tool === "delete") {
      commit({ tool: "delete", points: [p] });
    }
    redraw();
  });

  canvas.addEventListener("pointermove", (evt) => {
    v.hover = toImage(evt);
    if (v.pointers.has(evt.pointerId)) v.pointers.set(evt.pointerId, onCanvas(evt));
    if (v.pinch && v.pointers.size === 2) {
      const [a, b] = [...v.pointers.values()];
      const d = Math.hypot(a[0] - b[0], a[1] - b[1]) || 1;
      const mx = (a[0] + b[0]) / 2;
      const my = (a[1] + b[1]) / 2;
      v.view.tx += mx - v.pinch.mx;
      v.view.ty += my - v.pinch.my;
      v.pinch = { d, mx, my, ratio: d / v.pinch.d };
      zoomBy(v.pinch.ratio, mx, my);
      return;
    }
    if (v.pan && evt.pointerId === v.pan.id) {
      v.view.tx = v.pan.tx + evt.clientX - v.pan.x;
      v.view.ty = v.pan.ty + evt.clientY - v.pan.y;
      clampView();
      redraw();
      return;
    }
    if (v.draft && v.pointers.has(evt.pointerId)) {
      const pts = v.draft.points;
      if (v.tool === "split") {
        pts[1] = v.hover;
      } else if (v.tool === "freehand" || v.tool === "erase") {
        const [x, y] = pts[pts.length - 1];
        const step = Math.hypot(x - v.hover[0], y - v.hover[1]) * v.view.s;
        if (step >= STEP_PX) pts.push(v.hover);
      }
    }
    redraw();
  });

  function release(evt) {
    const had = v.pointers.delete(evt.pointerId);
    if (v.pinch) {
      if (v.pointers.size < 2) v.pinch = null;
      return;
    }
    if (v.pan && evt.pointerId === v.pan.id) {
      v.pan = null;
      box.classList.remove("ct-panning");
      return;
    }
    if (!had || !v.draft || evt.type === "pointercancel") {
      if (evt.type === "pointercancel" && v.tool !== "polygon") v.draft = null;
      redraw();
      return;
    }
    const pts = v.draft.points;
    if (v.tool === "freehand") {
      if (pts.length >= 3) commit(v.draft);
      else v.draft = null;
    } else if (v.tool === "erase") {
      commit(v.draft);
    } else if (v.tool === "split") {
      const long = Math.hypot(pts[0][0] - pts[1][0], pts[0][1] - pts[1][1]) * v.view.s > 3;
      if (long) commit(v.draft);
      else v.draft = null;
    }
    redraw();
  }
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  canvas.addEventListener("pointerleave", () => {
    v.hover = null;
    redraw();
  });
  canvas.addEventListener("dblclick", (evt) => {
    evt.preventDefault();
    if (v.tool === "polygon" && v.draft) {
      // The double-click's two presses added the same corner twice.
      const pts = v.draft.points;
      while (pts.length > 1) {
        const [a, b] = [pts[pts.length - 1], pts[pts.length - 2]];
        if (Math.hypot(a[0] - b[0], a[1] - b[1]) * v.view.s > 2) break;
        pts.pop();
      }
      closePolygon();
    }
  });
  canvas.addEventListener("wheel", (evt) => {
    evt.preventDefault();
    const [x, y] = onCanvas(evt);
    zoomBy(Math.exp(-evt.deltaY * 0.0015), x, y);
  }, { passive: false });

  // ---------------------------------------------------------------- keys
  const toolKeys = Object.fromEntries(TOOLS.map(([name, , , key]) => [key.toLowerCase(), name]));

  function onKey(evt) {
    if (!box.isConnected) {
      detach();
      return;
    }
    if (evt.defaultPrevented || typing(evt.target)) return;
    const key = evt.key;
    const mod = evt.ctrlKey || evt.metaKey;
    let done = true;
    if (mod && !evt.altKey && key.toLowerCase() === "z") {
      if (evt.shiftKey) redo();
      else undo();
    } else if (mod && !evt.altKey && !evt.shiftKey && key.toLowerCase() === "y") {
      redo();
    } else if (mod || evt.altKey) {
      done = false;
    } else if (toolKeys[key.toLowerCase()]) {
      setTool(toolKeys[key.toLowerCase()]);
    } else if (key === "+" || key === "=") {
      zoomBy(1.5);
    } else if (key === "-" || key === "_") {
      zoomBy(1 / 1.5);
    } else if (key === "0") {
      fit();
    } else if (key === "[") {
      setBrush(v.brush / 1.25);
    } else if (key === "]") {
      setBrush(v.brush * 1.25);
    } else if (key === "Enter" && v.draft) {
      closePolygon();
    } else if (key === "Escape" && v.draft) {
      v.draft = null;
      redraw();
    } else if (key === "Backspace" && v.draft && v.tool === "polygon") {
      undo();
    } else if (key === " " && v.hover) { // Space over the image: pan while held
      if (!v.space) {
        v.space = true;
        refreshBar();
      }
    } else {
      done = false;
    }
    if (done) {
      evt.preventDefault();
      evt.stopPropagation();
    }
  }

  function onKeyUp(evt) {
    if (evt.key === " " && v.space) {
      v.space = false;
      refreshBar();
    }
  }

  let attached = false;
  function attach() {
    if (attached) return;
    document.addEventListener("keydown", onKey);
    document.addEventListener("keyup", onKeyUp);
    window.addEventListener("resize", onResize);
    attached = true;
  }

  function detach() {
    document.removeEventListener("keydown", onKey);
    document.removeEventListener("keyup", onKeyUp);
    window.removeEventListener("resize", onResize);
    attached = false;
  }

  function onResize() {
    layout();
    redraw();
  }
  new ResizeObserver(onResize).observe(stage);

  // ---------------------------------------------------------------- data from the page
  function loadEdges(url, applied) {
    const img = new Image();
    img.onload = () => {
      if (v.edgeUrl !== url) return; // a newer one is on its way
      const c = document.createElement("canvas");
      c.width = v.W;
      c.height = v.H;
      const cx = c.getContext("2d", { willReadFrequently: true });
      cx.drawImage(img, 0, 0);
      const rgbaData = cx.getImageData(0, 0, v.W, v.H).data;
      const alpha = new Uint8Array(v.W * v.H);
      for (let i = 0; i < alpha.length; i++) alpha[i] = rgbaData[4 * i + 3] > 0 ? 1 : 0;
      v.edge = { image: img, alpha };
      v.pooled = new Map();
      v.applied = applied; // the strokes these outlines show
      v.edgeLoads += 1;
      box.dataset.outlines = String(v.edgeLoads); // how many outline sets arrived (for tests)
      redraw();
    };
    img.src = url;
  }

  v.update = (data) => {
    attach();
    v.colors = data.colors || {};
    v.outlineColor = data.outline_color || "#ffff00";
    const W = Number(data.width) || 1;
    const H = Number(data.height) || 1;
    if (data.image !== v.image || W !== v.W || H !== v.H) {
      v.image = data.image;
      box.dataset.imageId = data.image || "";
      delete box.dataset.image; // set again once this image has loaded
      v.W = W;
      v.H = H;
      v.view = null;
      v.edge = null;
      v.edgeUrl = null;
      v.cssW = 0;
    }
    if (data.doc !== v.doc) { // another list: a new image or version, a save, a discard
      v.doc = data.doc;
      v.strokes = Array.isArray(data.strokes) ? data.strokes.map((s) => ({ ...s })) : [];
      v.redo = [];
      v.draft = null;
    }
    const applied = new Set(data.applied || []);
    v.before = data.before ?? null;
    v.after = data.after ?? null;
    v.error = data.error || null;
    if (data.url && data.url !== v.bgUrl) {
      v.bgUrl = data.url;
      const img = new Image();
      img.onload = () => {
        box.dataset.image = "loaded";
        redraw();
      };
      img.src = data.url;
      v.bg = img;
    }
    if (data.outlines && data.outlines !== v.edgeUrl) {
      v.edgeUrl = data.outlines;
      loadEdges(data.outlines, applied); // its strokes turn faint once it is drawn
    } else {
      v.applied = applied;
    }
    layout();
    refreshBar();
    redraw();
  };
  v.detach = detach;
  return v;
}
