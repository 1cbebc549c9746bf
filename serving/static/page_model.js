"use strict";
// 模型 tab: the live model health report (GET /v1/model/health) for analysts and admins.
// Plots are inline SVG drawn here (no library, no request outside this server: the console runs air-gapped).
(() => {
  const c = window.yuyueConsole;
  if (!c) return;
  const { api, el, clear } = c;
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = { champion: "#2563eb", challenger: "#d97706", served: "#6b7585" };
  const ROLE_TEXT = { champion: "冠军", challenger: "挑战者", served: "曾上线" };
  const TARGETS = { booked: "预约", arrived: "到诊" };
  const BASIS = {
    closed: "结束对话口径（与离线评估一致）",
    last_message: "末条消息口径（咨询师所见分数）",
  };
  const BY = { week: "周", hospital: "医院", department: "科室", engine: "搜索引擎", consultant: "咨询师" };
  const LEVEL = { ok: "正常", warn: "警告", flag: "已标记" };
  const STATUS = { ok: "正常", warn: "警告", flag: "已标记", insufficient: "样本不足", unavailable: "不可用", skipped: "未计算" };
  const KIND = { categorical: "类别", numeric: "数值", concern: "关注点" };
  const EXPLAIN = {
    n: "已知结果且有分数的对话数",
    auc: "AUC：随机取一个发生结果和一个未发生的对话，模型给前者打分更高的概率（0.5 为随机，1 为完美）",
    ece: "ECE：预测概率与实际比例之差，在 10 个等宽分数区间上按对话数加权平均（0 为完美校准）",
    brier: "Brier：预测概率与实际结果（0/1）之差平方的平均（越低越好，兼顾排序与校准）",
    lift_at_10pct: "Lift@10%：得分最高 10% 对话的结果发生率 ÷ 总体发生率（越高越好）",
    rate: "实际发生率：已知结果的对话中发生该结果的比例",
    psi: "PSI（群体稳定性指数）：Σ(线上−训练)·ln(线上/训练)，衡量线上输入分布相对训练数据的偏移",
    noise: "噪声：两组同分布样本因抽样也会出现的 PSI，约 (k−1)(1/n+1/N)",
    excess: "超出噪声：PSI 减去噪声（不低于 0），与阈值比较",
    coverage: "覆盖率：已知结果的对话占全部对话的比例",
    delay: "延迟：从对话开始到第一次记录结果的小时数",
    acceptance: "采纳率：(直接采用 + 编辑后采用) ÷ 有反馈的建议数",
    feedback: "反馈率：有反馈的建议 ÷ 展示的建议",
  };
  const f3 = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3));
  const f2 = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(2));
  const f1 = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(1));
  const signed = (x) => (x === null || x === undefined ? "–" : (x > 0 ? "+" : "") + Number(x).toFixed(3));
  const pct = (x) => c.pct(x);

  const style = document.createElement("style");
  style.textContent = `
#view-model { overflow: auto; display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); grid-auto-rows: min-content; align-items: start; }
#view-model .wide { grid-column: 1 / -1; }
#view-model table { border-collapse: collapse; width: 100%; font-size: 12px; }
#view-model th, #view-model td { border-bottom: 1px solid var(--line); padding: 3px 6px; text-align: right; white-space: nowrap; }
#view-model th { color: var(--muted); font-weight: 600; cursor: help; }
#view-model th:first-child, #view-model td:first-child, #view-model td.l { text-align: left; }
#view-model tr.warn td { background: var(--warn-soft); }
#view-model tr.flag td { background: var(--bad-soft); color: var(--bad); font-weight: 600; }
#view-model .caption { color: var(--muted); font-size: 12px; margin: 4px 0 0; }
#view-model .caption div { margin: 1px 0; }
#view-model .badge { display: inline-block; padding: 0 8px; border-radius: 9px; font-size: 12px; background: var(--good-soft); color: var(--good); margin-right: 6px; }
#view-model .badge.up { background: var(--bad-soft); color: var(--bad); }
#view-model .badge.warn { background: var(--warn-soft); color: var(--warn); }
#view-model .denied { color: var(--bad); font-weight: 600; padding: 16px; }
#view-model .plots { display: flex; gap: 12px; flex-wrap: wrap; }
#view-model svg text { font-size: 10px; fill: #4b5563; }
#view-model .legend span { margin-right: 10px; font-size: 12px; }
#view-model .legend i { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 3px; vertical-align: -1px; }
`;
  document.head.append(style);

  const state = { by: "week", busy: false };
  const view = c.addPage({ id: "model", title: "模型", load });

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    for (const ch of children.flat()) if (ch) node.append(ch instanceof Node ? ch : document.createTextNode(String(ch)));
    return node;
  }
  const th = (text, key) => el("th", { text, title: key ? EXPLAIN[key] : undefined });
  const td = (text, attrs) => el("td", { text, ...(attrs || {}) });
  const card = (id, title, ...children) => el("div", { class: "card", id }, el("h3", { text: title }), ...children);
  const caption = (...keys) => el("div", { class: "caption" }, keys.map((k) => el("div", { text: EXPLAIN[k] })));
  const versionName = (v) => `v${v.version}（${ROLE_TEXT[v.role] || v.role}）`;

  async function load() {
    if (state.busy) return;
    state.busy = true;
    try {
      let report;
      try {
        report = await api("GET", `/v1/model/health?by=week`, undefined, { quiet: true });
      } catch (e) {
        if (e && e.status === 403) {
          clear(view, el("div", { class: "card wide denied", id: "m-denied",
            text: "模型健康报告仅对分析师和管理员开放：当前密钥的角色无权查看（HTTP 403）。请使用分析师或管理员密钥。" }));
          return;
        }
        if (e && e.status === undefined) throw e;
        c.showError(`错误 ${e.status}（GET /v1/model/health）：${e.detail}`);
        clear(view, el("div", { class: "card wide denied", id: "m-error", text: "模型健康报告加载失败：" + e.detail }));
        return;
      }
      render(report);
      if (state.by !== "week") await loadSlices();
    } finally {
      state.busy = false;
    }
  }

  async function loadSlices() {
    const box = view.querySelector("#m-slices-body");
    if (!box) return;
    const report = state.by === "week" ? state.report
      : await api("GET", `/v1/model/health?by=${c.enc(state.by)}&drift=false`);
    clear(box, slicesTables(report));
  }

  function render(r) {
    state.report = r;
    const bySelect = el("select", { id: "m-by", onchange: (ev) => { state.by = ev.target.value; loadSlices().catch(() => {}); } },
      Object.entries(BY).map(([v, t]) => el("option", { value: v, text: t, selected: v === state.by })));
    clear(view,
      headerCard(r),
      versionsCard(r),
      card("m-reliability", "可靠性图（预测概率 vs 实际比例）",
        el("div", { class: "plots" }, Object.keys(TARGETS).map((t) => reliabilityPlot(r, t))),
        legend(r.versions),
        el("div", { class: "caption" }, el("div", { text: "每个点是一个分数区间：横轴为区间内平均预测概率，纵轴为实际发生比例，点旁数字为对话数；越贴近对角线校准越好。" }), el("div", { text: EXPLAIN.ece }))),
      card("m-auc-week", "预约 AUC 按周（同一坐标轴）", aucChart(r), caption("auc")),
      card("m-slices", "分组指标",
        el("div", { class: "row small" }, el("span", { class: "muted", text: "分组：" }), bySelect),
        el("div", { id: "m-slices-body" }, slicesTables(r))),
      driftCard(r),
      outcomesCard(r),
      shadowCard(r),
      suggestionsCard(r));
  }

  function headerCard(r) {
    const f = r.flags;
    const badges = [
      el("span", { class: "badge" + (f.drift ? " up" : f.drift_warn ? " warn" : ""), id: "m-flag-drift", "data-on": String(f.drift),
        text: f.drift ? "输入漂移：已标记" : f.drift_warn ? "输入漂移：警告" : "输入漂移：正常" }),
      el("span", { class: "badge" + (f.accuracy ? " up" : ""), id: "m-flag-accuracy", "data-on": String(f.accuracy),
        text: f.accuracy ? "准确度：已标记" : "准确度：正常" }),
    ];
    return el("div", { class: "card wide", id: "m-head" },
      el("h3", {}, "模型健康", el("span", { class: "right small", text: "生成于 " + c.timeText(r.generated_at) }),
        el("button", { type: "button", id: "m-refresh", onclick: () => load().catch(() => {}) }, "刷新")),
      el("div", { class: "row" },
        el("span", { id: "m-champion", text: "冠军模型：" + (r.champion ? "v" + r.champion : "未加载") }),
        el("span", { id: "m-challenger", class: "muted", text: "挑战者：" + (r.challenger ? "v" + r.challenger : "无") }),
        badges),
      f.reasons.length ? el("ul", { class: "small", id: "m-reasons" }, f.reasons.map((x) => el("li", { text: x }))) : null,
      el("div", { class: "caption", text: "线上指标只计算已知结果（是否预约/到诊）的对话；旁边是该版本离线测试集上的同一指标，差值 = 线上 − 离线。" }));
  }

  function versionsCard(r) {
    const rows = [];
    for (const v of r.versions) {
      for (const [t, tText] of Object.entries(TARGETS)) {
        const live = v.live[t], off = (v.offline || {})[t] || {}, d = v.live_minus_offline[t] || {};
        rows.push(el("tr", { "data-version": v.version, "data-target": t },
          td(versionName(v), { class: "l" }), td(tText, { class: "l" }),
          td(String(live.n), { "data-k": "n" }),
          td(pct(live.rate), { "data-k": "rate" }),
          td(f3(live.auc), { "data-k": "auc" }), td(f3(off.auc), { "data-k": "offline_auc" }), td(signed(d.auc), { "data-k": "delta_auc" }),
          td(f3(live.ece), { "data-k": "ece" }), td(f3(off.ece), { "data-k": "offline_ece" }), td(signed(d.ece), { "data-k": "delta_ece" }),
          td(f3(live.brier), { "data-k": "brier" }), td(f3(off.brier), { "data-k": "offline_brier" }),
          td(f2(live.lift_at_10pct), { "data-k": "lift" }), td(f2(off.lift_at_10pct), { "data-k": "offline_lift" })));
      }
    }
    const bases = r.versions.map((v) => el("div", { "data-basis": v.basis },
      `v${v.version}：${BASIS[v.basis] || v.basis}` + (v.rescore_pending ? `，${v.rescore_pending} 个对话尚待按结束口径重新打分` : "")));
    return el("div", { class: "card wide", id: "m-versions" }, el("h3", { text: "各版本线上指标 vs 离线测试" }),
      el("table", {},
        el("thead", {}, el("tr", {}, th("版本"), th("目标"), th("对话数", "n"), th("发生率", "rate"),
          th("AUC", "auc"), th("离线", "auc"), th("差", "auc"), th("ECE", "ece"), th("离线", "ece"), th("差", "ece"),
          th("Brier", "brier"), th("离线", "brier"), th("Lift@10%", "lift_at_10pct"), th("离线", "lift_at_10pct"))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 14, class: "l muted", text: "暂无数据" })))),
      el("div", { class: "caption" }, bases),
      caption("auc", "ece", "brier", "lift_at_10pct"));
  }

  function legend(versions) {
    return el("div", { class: "legend" }, versions.map((v) =>
      el("span", {}, el("i", { style: `background:${COLORS[v.role] || COLORS.served}` }), versionName(v))));
  }

  // predicted (x) vs observed (y) per score bin, both 0..1; the diagonal; point size and label: chats in the bin
  function reliabilityPlot(r, target) {
    const W = 270, H = 260, L = 44, B = 28, T = 16, R = 10;
    const x = (p) => L + p * (W - L - R), y = (p) => H - B - p * (H - B - T);
    const g = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-target": target, role: "img" });
    g.append(svg("text", { x: L, y: 11, "font-weight": 600 }, TARGETS[target]));
    for (const t of [0, 0.25, 0.5, 0.75, 1]) {
      g.append(svg("line", { x1: x(0), x2: x(1), y1: y(t), y2: y(t), stroke: "#eef1f5" }));
      g.append(svg("text", { x: L - 4, y: y(t) + 3, "text-anchor": "end" }, t.toFixed(2)));
      g.append(svg("text", { x: x(t), y: H - B + 12, "text-anchor": "middle" }, t.toFixed(2)));
    }
    g.append(svg("text", { x: (L + W) / 2, y: H - 3, "text-anchor": "middle" }, "预测概率"));
    g.append(svg("text", { x: 10, y: (H - B + T) / 2, transform: `rotate(-90 10 ${(H - B + T) / 2})`, "text-anchor": "middle" }, "实际比例"));
    g.append(svg("line", { class: "diagonal", x1: x(0), y1: y(0), x2: x(1), y2: y(1), stroke: "#9ca3af", "stroke-dasharray": "4 3" }));
    for (const v of r.versions) {
      const bins = (v.live[target] && v.live[target].reliability) || [];
      if (!bins.length) continue;
      const color = COLORS[v.role] || COLORS.served;
      const max = Math.max(...bins.map((b) => b.n));
      g.append(svg("polyline", { points: bins.map((b) => `${x(b.mean_p).toFixed(1)},${y(b.observed).toFixed(1)}`).join(" "),
        fill: "none", stroke: color, "stroke-width": 1.2, "data-version": v.version }));
      for (const b of bins) {
        g.append(svg("circle", { cx: x(b.mean_p).toFixed(1), cy: y(b.observed).toFixed(1), r: (2.5 + 4 * Math.sqrt(b.n / max)).toFixed(1),
          fill: color, "fill-opacity": 0.75, "data-version": v.version, "data-n": b.n, "data-mean-p": b.mean_p, "data-observed": b.observed },
          svg("title", {}, `v${v.version} 区间 ${b.lo}–${b.hi}：预测 ${f3(b.mean_p)}，实际 ${f3(b.observed)}，${b.n} 个对话`)));
        g.append(svg("text", { x: (x(b.mean_p) + 6).toFixed(1), y: (y(b.observed) - 5).toFixed(1), class: "bin-n", "data-version": v.version }, String(b.n)));
      }
    }
    return g;
  }

  // booked AUC by week: every version's own chats, and the challenger on the champion's chats (shadow)
  function aucSeries(r) {
    const series = [];
    for (const v of r.versions) {
      if (v.by !== "week") continue;
      const pts = v.groups.filter((g) => g.booked.auc !== null).map((g) => ({ week: g.group, auc: g.booked.auc, n: g.booked.n }));
      if (pts.length) series.push({ key: v.version, label: versionName(v), color: COLORS[v.role] || COLORS.served, pts });
    }
    for (const s of r.shadow || []) {
      const pts = (s.weeks || []).filter((w) => w.booked.challenger.auc !== null)
        .map((w) => ({ week: w.week, auc: w.booked.challenger.auc, n: w.booked.challenger.n }));
      if (pts.length) series.push({ key: `${s.challenger}@shadow`, label: `v${s.challenger}（挑战者，影子打分）`, color: COLORS.challenger, pts, dashed: true });
    }
    return series;
  }

  function aucChart(r) {
    const series = aucSeries(r);
    if (!series.length) return el("div", { class: "empty", text: "暂无已知结果的对话" });
    const weeks = [...new Set(series.flatMap((s) => s.pts.map((p) => p.week)))].sort();
    const W = 560, H = 220, L = 38, B = 26, T = 10, R = 34;
    const lo = Math.min(0.5, ...series.flatMap((s) => s.pts.map((p) => p.auc)));
    const x = (w) => (weeks.length === 1 ? (L + W - R) / 2 : L + (weeks.indexOf(w) / (weeks.length - 1)) * (W - L - R));
    const y = (a) => H - B - ((a - lo) / (1 - lo)) * (H - B - T);
    const g = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "data-lo": lo });
    for (let i = 0; i <= 4; i++) {
      const a = lo + (i / 4) * (1 - lo);
      g.append(svg("line", { x1: L, x2: W - R, y1: y(a), y2: y(a), stroke: "#eef1f5" }));
      g.append(svg("text", { x: L - 4, y: y(a) + 3, "text-anchor": "end" }, a.toFixed(2)));
    }
    const every = Math.max(1, Math.ceil(weeks.length / 8));
    weeks.forEach((w, i) => { if (i % every === 0) g.append(svg("text", { x: x(w), y: H - B + 14, "text-anchor": "middle" }, w)); });
    for (const s of series) {
      g.append(svg("polyline", { points: s.pts.map((p) => `${x(p.week).toFixed(1)},${y(p.auc).toFixed(1)}`).join(" "), fill: "none",
        stroke: s.color, "stroke-width": 1.6, "stroke-dasharray": s.dashed ? "5 3" : null, "data-series": s.key }));
      for (const p of s.pts) {
        g.append(svg("circle", { cx: x(p.week).toFixed(1), cy: y(p.auc).toFixed(1), r: 3, fill: s.color, "data-series": s.key, "data-week": p.week, "data-auc": p.auc },
          svg("title", {}, `${s.label} ${p.week}：AUC ${f3(p.auc)}（${p.n} 个对话）`)));
      }
    }
    return el("div", {}, g, el("div", { class: "legend" }, series.map((s) =>
      el("span", {}, el("i", { style: `background:${s.color}` }), s.label))));
  }

  function slicesTables(r) {
    return r.versions.map((v) => el("div", { "data-version": v.version },
      el("div", { class: "small", text: `${versionName(v)}，按${BY[v.by] || v.by}` }),
      el("table", {},
        el("thead", {}, el("tr", {}, th(BY[v.by] || "分组"), th("对话数", "n"), th("预约 n", "n"), th("预约 AUC", "auc"),
          th("ECE", "ece"), th("Brier", "brier"), th("Lift@10%", "lift_at_10pct"), th("到诊 AUC", "auc"))),
        el("tbody", {}, v.groups.length ? v.groups.map((g) => el("tr", { "data-group": g.group },
          td(v.by === "engine" ? c.label(c.labels.ENGINES, g.group) : g.group), td(String(g.chats)), td(String(g.booked.n)),
          td(f3(g.booked.auc), { "data-k": "auc" }), td(f3(g.booked.ece)), td(f3(g.booked.brier)), td(f2(g.booked.lift_at_10pct)),
          td(f3(g.arrived.auc)))) : el("tr", {}, el("td", { colspan: 8, class: "l muted", text: "暂无数据" }))))));
  }

  function driftCard(r) {
    const d = r.drift;
    const warn = d.warn_above, flag = d.flag_above;
    const rows = [...d.features].sort((a, b) => b.excess - a.excess).map((f) =>
      el("tr", { class: f.level, "data-feature": f.feature, "data-level": f.level },
        td(f.feature, { class: "l" }), td(KIND[f.kind] || f.kind), td(f3(f.psi), { "data-k": "psi" }),
        td(f3(f.noise)), td(f3(f.excess), { "data-k": "excess" }), td(LEVEL[f.level] || f.level, { "data-k": "level" })));
    return el("div", { class: "card", id: "m-drift" },
      el("h3", {}, "输入漂移（线上 vs 训练数据）",
        el("span", { class: "right small", id: "m-drift-status", "data-status": d.status, text: "状态：" + (STATUS[d.status] || d.status) })),
      el("div", { class: "small", id: "m-drift-thresholds",
        text: warn !== undefined ? `阈值：超出噪声 > ${warn} 警告，> ${flag} 标记` : "" }),
      el("div", { class: "small muted", text: d.detail }),
      el("table", {},
        el("thead", {}, el("tr", {}, th("特征"), th("类型"), th("PSI", "psi"), th("噪声", "noise"), th("超出噪声", "excess"), th("级别"))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 6, class: "l muted", text: "暂无数据" })))),
      caption("psi", "noise", "excess"));
  }

  function outcomesCard(r) {
    const o = r.outcomes;
    const delay = (d) => `${d.n} 个；中位 ${f1(d.median)} 小时，P90 ${f1(d.p90)} 小时，最长 ${f1(d.max)} 小时`;
    const kv = (k, v, id) => [el("dt", { text: k }), el("dd", { text: v, id })];
    return el("div", { class: "card", id: "m-outcomes" }, el("h3", { text: "结果回收：覆盖率与延迟" }),
      el("dl", { class: "kv", style: "grid-template-columns: 120px 1fr" },
        kv("对话数", String(o.chats), "m-o-chats"),
        kv("预约结果已知", `${o.booked_known}（${pct(o.booked_coverage)}）`, "m-o-booked"),
        kv("到诊结果已知", `${o.arrived_known} / ${o.bookings} 个预约（${pct(o.arrived_coverage_of_booked)}）`, "m-o-arrived"),
        kv("预约结果延迟", delay(o.booked_delay_hours), "m-o-booked-delay"),
        kv("到诊结果延迟", delay(o.arrived_delay_hours), "m-o-arrived-delay")),
      caption("coverage", "delay"));
  }

  function shadowCard(r) {
    const rows = [];
    for (const s of r.shadow) {
      for (const [t, tText] of Object.entries(TARGETS)) {
        const x = s[t];
        rows.push(el("tr", { "data-challenger": s.challenger, "data-target": t },
          td(`v${s.challenger} vs v${s.champion}`, { class: "l" }), td(tText), td(String(x.champion.n)),
          td(f3(x.challenger.auc), { "data-k": "challenger_auc" }), td(f3(x.champion.auc), { "data-k": "champion_auc" }),
          td(signed(x.challenger_minus_champion.auc)), td(f3(x.challenger.ece)), td(f3(x.champion.ece)),
          td(f3(x.challenger.brier)), td(f3(x.champion.brier))));
      }
    }
    const timing = r.shadow_timing || {};
    return el("div", { class: "card", id: "m-shadow" }, el("h3", { text: "挑战者影子对比（同一批对话）" }),
      el("table", {},
        el("thead", {}, el("tr", {}, th("挑战者 vs 冠军"), th("目标"), th("对话数", "n"), th("挑战者 AUC", "auc"), th("冠军 AUC", "auc"),
          th("差", "auc"), th("挑战者 ECE", "ece"), th("冠军 ECE", "ece"), th("挑战者 Brier", "brier"), th("冠军 Brier", "brier"))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 10, class: "l muted", text: "没有挑战者在影子中打分（yuyue models shadow VERSION）" })))),
      el("div", { class: "caption", text: "挑战者对每条消息同样打分（存储但不展示）；两者都按各自末条消息分数比较。" +
        (timing.p50_ms !== undefined && timing.p50_ms !== null ? `挑战者每条消息耗时中位 ${f2(timing.p50_ms)} 毫秒。` : "") }));
  }

  function suggestionsCard(r) {
    const s = r.suggestions;
    const table = (dim, title, labelOf) => el("table", { "data-dim": dim },
      el("thead", {}, el("tr", {}, th(title), th("展示"), th("采用"), th("编辑后采用"), th("忽略"), th("采纳率", "acceptance"), th("反馈率", "feedback"))),
      el("tbody", {}, s["by_" + dim].length ? s["by_" + dim].map((x) => el("tr", { "data-key": x[dim] },
        td(labelOf(x[dim]), { class: "l" }), td(String(x.shown), { "data-k": "shown" }), td(String(x.used), { "data-k": "used" }),
        td(String(x.edited), { "data-k": "edited" }), td(String(x.dismissed), { "data-k": "dismissed" }),
        td(pct(x.acceptance_rate), { "data-k": "acceptance_rate" }), td(pct(x.feedback_rate)))) :
        el("tr", {}, el("td", { colspan: 7, class: "l muted", text: "暂无数据" }))));
    const o = s.overall;
    return el("div", { class: "card", id: "m-suggestions" }, el("h3", { text: "回复建议采纳" }),
      el("div", { class: "small", id: "m-s-overall",
        text: `共展示 ${o.shown} 条，有反馈 ${o.with_feedback} 条，采纳率 ${pct(o.acceptance_rate)}` }),
      table("version", "模型版本", (v) => "v" + v),
      table("stage", "阶段", (v) => c.label(c.labels.STAGES, v)),
      table("source", "来源", (v) => c.label({ ...c.labels.SOURCES, mined: "历史挖掘", neural: "神经排序" }, v)),
      caption("acceptance", "feedback"));
  }
})();
