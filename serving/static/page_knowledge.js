"use strict";
// 医院资料 tab: the hospital's knowledge (GET /v1/knowledge) — doctors with duty and leave, projects with price
// ranges, activities with validity, address and directions — that replies are filled from. Everyone reads;
// admins edit in place and save the whole document (PUT /v1/knowledge?rev=N: checked whole on the server,
// a 422 names the field or the compliance rule and stores nothing). The day check asks the server who is
// on duty and which activities are valid on a date (GET /v1/knowledge/day). With several documents to pick
// (the default one and the key's hospitals': the view's ``hospitals``), a select picks whose; every call
// then names it (?hospital=).
(() => {
  const c = window.yuyueConsole;
  if (!c) return;
  const { api, el, clear, showError } = c;
  const DAYS = ["周一", "周二", "周三", "周四", "周五", "周六", "周日"];
  const style = document.createElement("style");
  style.textContent = `
#view-knowledge { overflow: auto; }
#view-knowledge .card { margin-bottom: 12px; }
#view-knowledge table { border-collapse: collapse; width: 100%; font-size: 12px; }
#view-knowledge th, #view-knowledge td { border-bottom: 1px solid var(--line); padding: 3px 6px; text-align: left; vertical-align: top; }
#view-knowledge th { color: var(--muted); font-weight: 600; }
#view-knowledge input, #view-knowledge textarea { width: 100%; box-sizing: border-box; font-size: 12px; }
#view-knowledge input.num { width: 80px; }
#view-knowledge .bar { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; margin: 6px 0; }
#view-knowledge .muted { color: var(--muted); font-size: 12px; }
#view-knowledge .ok { color: var(--good); } #view-knowledge .bad { color: var(--bad); }
#view-knowledge .hosp { display: grid; grid-template-columns: 90px 1fr; gap: 4px 8px; font-size: 13px; }
`;
  document.head.append(style);

  const state = { data: null, editable: false, hospital: null };
  // ?hospital= of every call once a hospital is picked (none: the server's default for the key)
  const withHospital = (q) => { if (state.hospital) q.set("hospital", state.hospital); return q; };
  const view = c.addPage({ id: "knowledge", title: "医院资料", load });

  // ---- text forms of the structured fields (what an admin types) --------------------------------
  const list = (a) => (a || []).join("、");
  const parseList = (s) => s.split(/[、,，;；\s]+/).map((x) => x.trim()).filter(Boolean);
  // a duty's hours: its own (hours, or start-end), else the doctor's hours; a day of several ranges reads
  // 周二 09:00-12:00,14:00-17:30
  const dutyText = (duty, hours) => (duty || []).map((d) => `${DAYS[d.weekday - 1]} ${d.hours || (d.start ? `${d.start}-${d.end}` : hours)}`).join("；");
  const leaveText = (leave) => (leave || []).map((l) => (l.first_day === l.last_day ? l.first_day : `${l.first_day}~${l.last_day}`)).join("；");
  function parseDuty(s) {
    const range = /^(\d{1,2}:\d{2})\s*[-–~至]\s*(\d{1,2}:\d{2})$/;
    const pad = (t) => (t.length === 4 ? "0" + t : t);
    return s.split(/[;；\n]+/).map((x) => x.trim()).filter(Boolean).map((part) => {
      const m = part.match(/^(周[一二三四五六日天]|[1-7])\s*(.+)$/);
      const ranges = m ? m[2].split(/[,，、]/).map((r) => r.trim().match(range)) : [null];
      if (ranges.some((r) => !r)) throw new Error(`出诊时间格式不对：「${part}」（例：周二 09:00-12:00,14:00-17:30）`);
      const weekday = /^\d$/.test(m[1]) ? Number(m[1]) : (m[1] === "周天" ? 7 : DAYS.indexOf(m[1]) + 1);
      if (ranges.length === 1) return { weekday, start: pad(ranges[0][1]), end: pad(ranges[0][2]) };
      return { weekday, hours: ranges.map((r) => `${pad(r[1])}-${pad(r[2])}`).join(",") };
    });
  }
  function parseLeave(s) {
    return s.split(/[;；\n]+/).map((x) => x.trim()).filter(Boolean).map((part) => {
      const m = part.match(/^(\d{4}-\d{2}-\d{2})(?:\s*[~至–-]{1,2}\s*(\d{4}-\d{2}-\d{2}))?$/);
      if (!m) throw new Error(`停诊日期格式不对：「${part}」（例：2027-03-03~2027-03-05）`);
      return { first_day: m[1], last_day: m[2] || m[1] };
    });
  }
  const today = () => new Date(Date.now() - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 10);
  function validity(a) {
    const t = today();
    if (t < a.valid_from) return el("span", { class: "muted", text: "未开始" });
    if (t > a.valid_to) return el("span", { class: "bad", text: "已过期" });
    return el("span", { class: "ok", text: "有效" });
  }

  // ---- cells: an input for admins, text otherwise -----------------------------------------------
  function cell(value, key, opts = {}) {
    if (!state.editable) return el("td", { text: value === null || value === undefined ? "" : String(value), "data-k": key });
    const input = el(opts.area ? "textarea" : "input", {
      "data-k": key, value: value === null || value === undefined ? "" : String(value),
      type: opts.type || (opts.area ? undefined : "text"), class: opts.num ? "num" : undefined, rows: opts.area ? 2 : undefined,
    });
    if (opts.area) input.value = value || "";
    return el("td", {}, input);
  }
  const val = (row, key) => { const n = row.querySelector(`[data-k="${key}"]`); return n ? (n.value !== undefined ? n.value : n.textContent).trim() : ""; };
  const opt = (s) => (s === "" ? undefined : s);
  const num = (s) => (s === "" ? undefined : Number(s));
  const delCell = () => (state.editable ? el("td", {}, el("button", { type: "button", class: "k-del", text: "删除", onclick: (e) => e.target.closest("tr").remove() })) : null);

  function doctorRow(d) {
    return el("tr", { "data-name": d.name },
      cell(d.name, "name"), cell(d.title, "title"), cell(d.department, "department"), cell(list(d.specialties), "specialties"),
      cell(dutyText(d.duty, d.hours), "duty"), cell(leaveText(d.leave), "leave"), delCell());
  }
  function projectRow(dept, p) {
    return el("tr", { "data-name": p.name, "data-department": dept },
      cell(dept, "department"), cell(p.name, "name"), cell(list(p.aliases), "aliases"),
      cell(p.price_low, "price_low", { num: true, type: "number" }), cell(p.price_high, "price_high", { num: true, type: "number" }),
      cell(p.duration, "duration"), delCell());
  }
  function activityRow(a) {
    return el("tr", { "data-id": a.id },
      cell(a.id, "id"), cell(a.title, "title"), cell(a.wording, "wording", { area: true }),
      cell(a.valid_from, "valid_from", { type: "date" }), cell(a.valid_to, "valid_to", { type: "date" }),
      cell(a.conditions, "conditions"), cell(list(a.departments), "departments"), cell(list(a.projects), "projects"),
      el("td", { class: "k-valid" }, a.valid_from ? validity(a) : ""), delCell());
  }
  const table = (id, heads, rows) => el("table", { id },
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", { text: h })), state.editable ? el("th", { text: "" }) : null)),
    el("tbody", {}, rows));

  // ---- the document back from the inputs --------------------------------------------------------
  function collect() {
    const h = (k) => opt(val(view.querySelector("#k-hospital"), k));
    const hospital = { name: h("name"), address: h("address"), phone: h("phone"), directions: h("directions"), bring: h("bring") };
    const depts = new Map((state.data.knowledge.departments || []).map((d) => [d.name, { name: d.name, bring: d.bring, projects: [] }]));
    for (const tr of view.querySelectorAll("#k-projects tbody tr")) {
      const dept = val(tr, "department");
      if (!depts.has(dept)) depts.set(dept, { name: dept, projects: [] });
      depts.get(dept).projects.push({
        name: val(tr, "name"), aliases: parseList(val(tr, "aliases")),
        price_low: num(val(tr, "price_low")), price_high: num(val(tr, "price_high")), duration: opt(val(tr, "duration")),
      });
    }
    const doctors = [...view.querySelectorAll("#k-doctors tbody tr")].map((tr) => ({
      name: val(tr, "name"), title: val(tr, "title"), department: val(tr, "department"),
      specialties: parseList(val(tr, "specialties")), duty: parseDuty(val(tr, "duty")), leave: parseLeave(val(tr, "leave")),
    }));
    for (const d of doctors) if (d.department && !depts.has(d.department)) depts.set(d.department, { name: d.department, projects: [] });
    const activities = [...view.querySelectorAll("#k-activities tbody tr")].map((tr) => ({
      id: val(tr, "id"), title: val(tr, "title"), wording: val(tr, "wording"), valid_from: val(tr, "valid_from"),
      valid_to: val(tr, "valid_to"), conditions: opt(val(tr, "conditions")),
      departments: parseList(val(tr, "departments")), projects: parseList(val(tr, "projects")),
    }));
    return { hospital, departments: [...depts.values()], doctors, activities };
  }

  async function save() {
    const status = view.querySelector("#k-status");
    let doc;
    try { doc = collect(); } catch (e) { status.textContent = e.message; status.className = "bad"; showError(e.message); return; }
    try {
      state.data = await api("PUT", `/v1/knowledge?${withHospital(new URLSearchParams({ rev: state.data.rev }))}`, doc);
    } catch (e) {
      status.textContent = "未保存：" + (e.detail || e.message);
      status.className = "bad";
      return;
    }
    render();
    const s = view.querySelector("#k-status");
    s.textContent = `已保存（版本 ${state.data.rev}），下一条消息起生效`;
    s.className = "ok";
  }

  async function dayCheck() {
    const date = view.querySelector("#k-day-date").value;
    const dept = view.querySelector("#k-day-dept").value;
    const q = withHospital(new URLSearchParams({ date }));
    if (dept) q.set("department", dept);
    const r = await api("GET", `/v1/knowledge/day?${q}`);
    clear(view.querySelector("#k-day-result"),
      el("div", { "data-k": "on" }, "出诊：", r.on_duty.length ? r.on_duty.map((d) => `${d.name}${d.title}（${d.department} ${d.hours || `${d.start}-${d.end}`}）`).join("；") : "无"),
      el("div", { "data-k": "off", class: "muted" }, "不出诊：", r.off.map((d) => `${d.name}（${d.why === "leave" ? "停诊" : "当天无排班"}）`).join("；") || "无"),
      el("div", { "data-k": "activities" }, "有效活动：", r.activities.map((a) => a.title).join("；") || "无"));
  }

  function hospitalCard(h) {
    const field = (k, label) => [el("label", { text: label }), state.editable
      ? el("input", { "data-k": k, value: h[k] || "" }) : el("span", { "data-k": k, text: h[k] || "–" })];
    return el("div", { class: "card" }, el("h3", { text: "医院信息" }),
      el("div", { class: "hosp", id: "k-hospital" }, field("name", "名称"), field("address", "地址"), field("phone", "电话"),
        field("directions", "来院路线"), field("bring", "就诊携带")));
  }

  // the hospital picker: only when there is more than one document to pick
  function picker() {
    const ids = state.data.hospitals || [];
    if (ids.length < 2) return null;
    const name = (h, i) => (i === 0 ? `${h}（默认资料）` : h);
    return el("select", { id: "k-hospital-pick", onchange: (e) => { state.hospital = e.target.value; load().catch(() => {}); } },
      ids.map((h, i) => el("option", { value: h, text: name(h, i), selected: h === state.data.hospital_id })));
  }

  function render() {
    const k = state.data.knowledge;
    const depts = (k.departments || []).map((d) => d.name);
    const projects = (k.departments || []).flatMap((d) => d.projects.map((p) => projectRow(d.name, p)));
    const add = (id, label, row) => (state.editable ? el("button", { type: "button", id, text: label, onclick: () => view.querySelector(`#${id.replace("add-", "")} tbody`).append(row()) }) : null);
    clear(view,
      el("div", { class: "bar" },
        el("strong", { text: "医院资料" }),
        picker(),
        state.data.rev === 0 && !state.data.default ? el("span", { class: "muted", id: "k-uses-default", text: "本院尚无资料，对话使用默认资料" }) : null,
        el("span", { class: "muted", id: "k-rev", text: `版本 ${state.data.rev}${state.data.updated_by ? `，${state.data.updated_by} 更新于 ${c.timeText(state.data.updated_at)}` : ""}` }),
        state.editable ? el("button", { type: "button", id: "k-save", text: "保存全部", onclick: save }) : el("span", { class: "muted", id: "k-readonly", text: "只读（管理员可编辑）" }),
        el("span", { id: "k-status" })),
      el("div", { class: "card" }, el("h3", { text: "出诊查询" }),
        el("div", { class: "bar" }, el("input", { id: "k-day-date", type: "date", value: today(), style: "width:auto" }),
          el("select", { id: "k-day-dept" }, el("option", { value: "", text: "全部科室" }), depts.map((d) => el("option", { value: d, text: d }))),
          el("button", { type: "button", id: "k-day-go", text: "查询", onclick: () => dayCheck().catch(() => {}) })),
        el("div", { id: "k-day-result", class: "muted", text: "选择日期查看当天出诊医生和有效活动（推荐回复只会提到当天出诊的医生）" })),
      hospitalCard(k.hospital || {}),
      el("div", { class: "card" }, el("h3", { text: "医生与排班" }),
        el("div", { class: "muted", text: "出诊：周一…周日 + 时间，多段用；分隔；停诊：日期或 日期~日期" }),
        table("k-doctors", ["姓名", "职称", "科室", "擅长", "出诊", "停诊"], (k.doctors || []).map(doctorRow)),
        add("add-k-doctors", "添加医生", () => doctorRow({ name: "", title: "", department: depts[0] || "", duty: [], leave: [] }))),
      el("div", { class: "card" }, el("h3", { text: "项目与价格（元）" }),
        table("k-projects", ["科室", "项目", "别名", "最低价", "最高价", "大致时长"], projects),
        add("add-k-projects", "添加项目", () => projectRow(depts[0] || "", { name: "" }))),
      el("div", { class: "card" }, el("h3", { text: "活动" }),
        el("div", { class: "muted", text: "活动文案保存时经过合规检查；仅在有效期内、对适用科室/项目的对话推荐" }),
        table("k-activities", ["编号", "名称", "文案", "开始", "结束", "条件", "科室", "项目", "状态"], (k.activities || []).map(activityRow)),
        add("add-k-activities", "添加活动", () => activityRow({ id: "", title: "", wording: "", valid_from: today(), valid_to: today() }))));
  }

  async function load() {
    state.data = await api("GET", `/v1/knowledge?${withHospital(new URLSearchParams())}`);
    state.editable = !!state.data.editable;
    render();
  }
})();
