/* devvis report: progressive enhancement of the static pages (written by devvis.report).
   Unit pages: step slider, play, arrow keys, the current step marked on every curve, #step=N links.
   Layer pages: sort and filter the unit grid, #filter=...&sort=... links.
   Overview: #/unit/LAYER:C/step/N (or #LAYER:C@step=N) opens that unit's page at that step.
   Data comes from the page itself (<script type="application/json" id="page-data">) or <script src>,
   never fetch(), so the site works from file://. */
(function () {
  'use strict';
  document.documentElement.classList.add('js');
  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function hashParams() {
    var out = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      var p = kv.split('=');
      if (p.length === 2) out[decodeURIComponent(p[0])] = decodeURIComponent(p[1]);
    });
    return out;
  }
  function setSrc(img, src) {
    if (!img) return;
    var fig = img.closest('figure');
    if (src) { if (img.getAttribute('src') !== src) img.setAttribute('src', src); if (fig) fig.hidden = false; }
    else { img.removeAttribute('src'); if (fig) fig.hidden = true; }
  }

  function markCharts(step) {
    $$('svg.chart').forEach(function (svg) {
      var steps = (svg.getAttribute('data-steps') || '').split(','), xs = (svg.getAttribute('data-xs') || '').split(',');
      var k = steps.indexOf(String(step)), mark = $('line.mark', svg);
      if (k < 0) { if (mark) mark.style.display = 'none'; return; }
      if (!mark) {
        var frame = $('rect.frame', svg), y = +frame.getAttribute('y'), h = +frame.getAttribute('height');
        mark = document.createElementNS('http://www.w3.org/2000/svg', 'line');
        mark.setAttribute('class', 'mark'); mark.setAttribute('y1', y); mark.setAttribute('y2', y + h);
        svg.appendChild(mark);
      }
      mark.setAttribute('x1', xs[k]); mark.setAttribute('x2', xs[k]);
      mark.setAttribute('data-step', step); mark.style.display = '';
    });
  }

  function unitPage(data) {
    var n = data.steps.length, i = data.i, timer = null;
    var slider = $('#slider'), play = $('#play'), out = $('#step-out');
    function set(j, fromHash) {
      i = Math.max(0, Math.min(n - 1, j));
      var v = data.views[i], s = data.steps[i], img = $('#viz'), fail = $('#viz-failed');
      if (v.img) {
        if (img.getAttribute('src') !== v.img) img.setAttribute('src', v.img);
        img.alt = data.unit + ' at step ' + s; img.hidden = false; fail.hidden = true;
      } else {
        img.hidden = true; img.removeAttribute('src');
        fail.textContent = v.err ? 'failed at step ' + s + ': ' + v.err : 'no visualization at this checkpoint';
        fail.hidden = false;
      }
      setSrc($('#examples'), v.ex); setSrc($('#seeds'), v.seeds);
      $$('.step-now').forEach(function (e) { e.textContent = s; });
      if (out) out.textContent = 'step ' + s;
      if (slider) slider.value = i;
      var verdict = $('#verdict-now');
      if (verdict) verdict.textContent = v.verdict ? 'trust verdict here: ' + v.verdict : '';
      $$('tr[data-step]').forEach(function (tr) { tr.classList.toggle('current', tr.getAttribute('data-step') === String(s)); });
      $$('#filmstrip td').forEach(function (td) { td.classList.toggle('current', td.id === 'at-' + s); });
      markCharts(s);
      document.body.setAttribute('data-step', s);
      if (!fromHash && history.replaceState) history.replaceState(null, '', '#step=' + s);
      var next = data.views[i + 1];
      if (next && next.img) { var pre = new Image(); pre.src = next.img; }
    }
    function fromHash() {
      var s = hashParams().step;
      if (s !== undefined) { var k = data.steps.map(String).indexOf(s); if (k >= 0) set(k, true); }
    }
    function stop() { if (timer) { clearInterval(timer); timer = null; } if (play) play.innerHTML = '&#9654; play'; }
    function toggle() {
      if (timer) { stop(); return; }
      if (i >= n - 1) set(0);
      play.innerHTML = '&#10074;&#10074; pause';
      timer = setInterval(function () { if (i >= n - 1) stop(); else set(i + 1); }, 700);
    }
    if (slider) slider.addEventListener('input', function () { stop(); set(+slider.value); });
    if (play) play.addEventListener('click', toggle);
    $$('#filmstrip a[data-i]').forEach(function (a) {
      a.addEventListener('click', function (e) { e.preventDefault(); stop(); set(+a.getAttribute('data-i')); });
    });
    document.addEventListener('keydown', function (e) {
      var t = e.target, tag = t && t.tagName;
      if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA' || e.altKey || e.ctrlKey || e.metaKey) return;
      var k = {ArrowLeft: i - 1, ArrowDown: i - 1, ArrowRight: i + 1, ArrowUp: i + 1, Home: 0, End: n - 1}[e.key];
      if (k !== undefined) { e.preventDefault(); stop(); set(k); }
      else if (e.key === ' ' && tag !== 'BUTTON' && tag !== 'A') { e.preventDefault(); toggle(); }
    });
    window.addEventListener('hashchange', fromHash);
    document.body.setAttribute('data-step', data.steps[i]);
    fromHash();
    markCharts(data.steps[i]);
  }

  function layerPage(list) {
    var cards = $$('li.card', list), buttons = $$('[data-filter]'), sort = $('#sort'), shown = $('#shown');
    var p = hashParams(), filter = p.filter || 'all';
    if (p.sort && sort) sort.value = p.sort;
    function key(c) {
      var ch = +c.getAttribute('data-channel'), settle = c.getAttribute('data-settle'), trust = c.getAttribute('data-trust');
      var by = sort ? sort.value : 'channel';
      if (by === 'settle') return [settle === '' ? Infinity : +settle, ch];
      if (by === 'trust') return [trust === 'suspicious' ? 0 : trust === 'trustworthy' ? 1 : 2, ch];
      return [ch, 0];
    }
    function keep(c) {
      if (filter === 'all') return true;
      if (filter === 'suspicious') return c.getAttribute('data-trust') === 'suspicious';
      if (filter === 'failed') return +c.getAttribute('data-failed') > 0;
      return c.getAttribute('data-class') === filter;
    }
    function apply(write) {
      var sorted = cards.slice().sort(function (a, b) {
        var x = key(a), y = key(b);
        return x[0] - y[0] || x[1] - y[1];
      });
      var count = 0;
      sorted.forEach(function (c) { c.hidden = !keep(c); if (!c.hidden) count++; list.appendChild(c); });
      buttons.forEach(function (b) { b.setAttribute('aria-pressed', String(b.getAttribute('data-filter') === filter)); });
      if (shown) shown.textContent = count + ' of ' + cards.length + ' shown';
      document.body.setAttribute('data-shown', count);
      if (write && history.replaceState) history.replaceState(null, '', '#filter=' + filter + '&sort=' + (sort ? sort.value : 'channel'));
    }
    buttons.forEach(function (b) { b.addEventListener('click', function () { filter = b.getAttribute('data-filter'); apply(true); }); });
    if (sort) sort.addEventListener('change', function () { apply(true); });
    apply(false);
  }

  function route(data) {
    var h = decodeURIComponent(location.hash);
    var m = h.match(/^#\/unit\/(.+?)(?:\/step\/(-?\d+))?\/?$/) || h.match(/^#([^@#]+:\d+)(?:@step=(-?\d+))?$/);
    if (!m || !data.units_js) return;
    var s = document.createElement('script');
    s.src = data.units_js;
    s.onload = function () {
      var page = (window.DEVVIS_UNITS || {})[m[1]];
      if (page) { location.replace(page + (m[2] ? '#step=' + m[2] : '')); return; }
      var note = document.createElement('p');
      note.className = 'failed'; note.id = 'route-missing';
      note.textContent = 'This report has no unit ' + m[1] + '.';
      $('main').insertBefore(note, $('main').firstChild);
    };
    document.head.appendChild(s);
  }

  function start() {
    var blob = $('#page-data'), data = blob ? JSON.parse(blob.textContent) : {};
    if (data.views) unitPage(data);
    var list = $('#cards');
    if (list) layerPage(list);
    if (data.units_js) { route(data); window.addEventListener('hashchange', function () { route(data); }); }
    document.body.setAttribute('data-ready', '1');
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
