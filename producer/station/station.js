/* The keying station's page: one flagged crop at a time, keyed from the keyboard.
 *
 * The app (producer/review.py) claims the next image for this station (POST api/next), serves it
 * (api/image) and stores what is keyed (POST api/key). The next image is claimed and loaded while
 * the operator keys this one, so the page moves on at once; codes are sent in the background, in
 * order, and retried while the app is unreachable. Claims on the images this page holds are
 * renewed every third of the claim period, and given back when the page closes.
 *
 * For tests and the console: window.keyingSettled() -> a promise that resolves once every code
 * keyed so far is stored (or refused).
 */
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const field = $('code');
  const CODE = /^\d+(?:[- ]\d+)*$/;
  const RATE_WINDOW_MS = 5 * 60 * 1000;
  const POLL_MS = 2000;
  const RECENT = 12;
  const MAX_WIDTH = 900;
  const MAX_HEIGHT = 220;
  const MAX_ZOOM = 6;

  let config = null; // {run, station, claim_seconds, unreadable_key, progress}
  let current = null; // the item on screen: {path, result, image, problem}
  let upcoming = null; // a promise of the next item, claimed and loaded
  let overwrite = true;
  let startedAt = null;
  let keyedHere = 0;
  const held = new Set(); // paths this page holds a claim on
  const lost = new Set(); // claims that lapsed and went to another station
  const keyTimes = [];
  let submissions = Promise.resolve();

  async function api(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: body === undefined ? {} : {'Content-Type': 'application/json'},
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
    if (!response.ok) {
      const error = new Error(data.error || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  const imageUrl = (path) => 'api/image?path=' + encodeURIComponent(path);

  /** Claim the next image and load it; {path: null, progress} when none is free now. */
  async function fetchItem() {
    const item = await api('POST', 'api/next', {});
    if (item.path === null) return item;
    held.add(item.path);
    const image = new Image();
    image.id = 'crop-image';
    image.alt = `the flagged crop ${item.path}`;
    image.src = imageUrl(item.path);
    try {
      await image.decode();
      item.image = image;
    } catch {
      item.problem = await api('GET', imageUrl(item.path)).then(() => 'cannot decode it', (error) => error.message);
    }
    return item;
  }

  function setStatus(text, kind = '') {
    $('status').textContent = text;
    $('status').className = 'status ' + kind;
  }

  function showProgress(progress) {
    $('left').textContent = progress.left;
    $('read').textContent = `${progress.read} / ${progress.total}` + (progress.complete ? '' : ' …');
  }

  function probabilityClass(p) {
    return p < 0.5 ? 'bad' : p < 0.9 ? 'doubt' : '';
  }

  /** The crop, the machine's boxes on it and its digits under it, each with its probability. */
  function drawReading(item) {
    const old = $('crop-image');
    const image = item.image || Object.assign(new Image(), {id: 'crop-image', alt: 'cannot be shown'});
    old.replaceWith(image);
    const result = item.result || {};
    const digits = result.digits || '';
    const boxes = item.image ? result.boxes || [] : [];
    const confidences = result.confidences || [];
    const svg = $('boxes');
    const width = image.naturalWidth || 1;
    const height = image.naturalHeight || 1;
    const scale = Math.min(MAX_WIDTH / width, MAX_HEIGHT / height, MAX_ZOOM); // small scans are enlarged
    image.style.width = `${Math.round(width * scale)}px`;
    image.style.height = `${Math.round(height * scale)}px`;
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.replaceChildren();
    const readout = $('readout');
    readout.replaceChildren();
    readout.style.width = `${image.getBoundingClientRect().width}px`;
    boxes.forEach(([left, top, right, bottom], index) => {
      const p = confidences[index] ?? 0;
      const rect = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
      Object.entries({x: left, y: top, width: right - left, height: bottom - top}).forEach(([k, v]) => rect.setAttribute(k, v));
      rect.setAttribute('class', probabilityClass(p));
      rect.dataset.index = index;
      rect.addEventListener('mousedown', (event) => { event.preventDefault(); caretToDigit(index); });
      svg.append(rect);
      const cell = document.createElement('span');
      cell.className = 'digit ' + probabilityClass(p);
      cell.dataset.index = index;
      cell.style.left = `${((left + right) / 2 / width) * 100}%`;
      cell.innerHTML = `<span class="value"></span><span class="probability"></span>`;
      cell.querySelector('.value').textContent = digits[index] ?? '?';
      cell.querySelector('.probability').textContent = p.toFixed(3);
      readout.append(cell);
    });
    $('path').textContent = item.path;
    $('machine').textContent = result.code
      ? `· machine read ${result.code} (confidence ${(result.confidence ?? 0).toFixed(3)}, ${result.model_version})`
      : '';
  }

  function show(item) {
    current = item;
    startedAt = startedAt ?? Date.now();
    $('work').dataset.path = item.path;
    drawReading(item);
    field.value = (item.result && item.result.code) || '';
    field.classList.remove('invalid');
    field.focus();
    field.setSelectionRange(0, 0);
    markCursor();
    if (item.problem) {
      setStatus(`This image cannot be shown (${item.problem}): press ${config.unreadable_key} to mark it unreadable.`,
        'error');
    } else {
      setStatus('');
    }
  }

  /** Show the next image: the one loaded meanwhile, or a new claim; wait while none is free. */
  async function advance() {
    current = null;
    $('work').dataset.path = '';
    let item = null;
    try {
      item = upcoming ? await upcoming : null;
      if (item === null || item.path === null) { // none was free then: ask again once our codes are in
        await submissions;
        item = await fetchItem();
      }
    } catch (error) {
      upcoming = null;
      setStatus(`Cannot reach the station's app (${error.message}); trying again…`, 'error');
      setTimeout(advance, POLL_MS);
      return;
    }
    upcoming = null;
    if (item.path !== null && lost.has(item.path)) {
      advance();
      return;
    }
    if (item.path === null) {
      showProgress(item.progress);
      waitForMore(item.progress);
      return;
    }
    show(item);
    upcoming = fetchItem();
    upcoming.catch(() => {}); // an error is met when it is awaited
  }

  function waitForMore(progress) {
    field.value = '';
    $('boxes').replaceChildren();
    $('readout').replaceChildren();
    if (progress.left === 0 && progress.complete) {
      setStatus(`Done: all ${progress.flagged} flagged codes of this run are keyed.`, 'done');
      return;
    }
    setStatus(progress.left > 0
      ? `Waiting: the ${progress.left} codes left are on other stations' screens.`
      : 'Waiting: the run is still being read; more codes may be flagged.');
    setTimeout(advance, POLL_MS);
  }

  function remember(text, kind) {
    const entry = document.createElement('li');
    entry.textContent = text;
    entry.className = kind;
    $('recent').prepend(entry);
    while ($('recent').children.length > RECENT) $('recent').lastChild.remove();
  }

  /** Store a keyed code, after those before it, retrying while the app cannot be reached. */
  function submit(body) {
    const send = async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          const stored = await api('POST', 'api/key', body);
          held.delete(body.path);
          keyedHere += 1;
          $('keyed-here').textContent = keyedHere;
          showProgress(stored.progress);
          remember(`${body.path}: ${body.unreadable ? 'unreadable' : body.code}`, body.unreadable ? 'unreadable' : '');
          return;
        } catch (error) {
          if (error.status !== undefined || attempt >= 30) {
            held.delete(body.path);
            remember(`${body.path}: NOT STORED: ${error.message}`, 'failed');
            setStatus(`${body.path} was not stored: ${error.message}`, 'error');
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      }
    };
    submissions = submissions.then(send);
  }

  function finish(body) {
    keyTimes.push(Date.now());
    submit(body);
    advance();
  }

  function accept() {
    if (!current) return;
    const code = field.value.trim();
    if (!CODE.test(code)) {
      field.classList.add('invalid');
      setStatus(`"${code}" is not a code: digits, with - or a space between groups (or ${config.unreadable_key}: unreadable).`,
        'error');
      return;
    }
    finish({path: current.path, code});
  }

  function markUnreadable() {
    if (current) finish({path: current.path, unreadable: true});
  }

  function setMode(overwriting) {
    overwrite = overwriting;
    $('mode').textContent = overwrite ? 'overwrite' : 'insert';
    $('mode').classList.toggle('insert', !overwrite);
  }

  /** Typing a digit replaces the digit at the cursor (separators are stepped over), unless inserting. */
  function overtype(event) {
    const value = field.value;
    let at = field.selectionStart;
    if (!overwrite || !/[0-9]/.test(event.key) || at !== field.selectionEnd) return;
    while (at < value.length && !/[0-9]/.test(value[at])) at++;
    if (at >= value.length) return; // at the end: the digit is added
    event.preventDefault();
    field.value = value.slice(0, at) + event.key + value.slice(at + 1);
    field.setSelectionRange(at + 1, at + 1);
    field.classList.remove('invalid');
    markCursor();
  }

  field.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || !config) return;
    if (event.key === 'Enter') {
      event.preventDefault();
      accept();
    } else if (event.key === config.unreadable_key) {
      event.preventDefault();
      markUnreadable();
    } else if (event.key === 'Insert') {
      event.preventDefault();
      setMode(!overwrite);
    } else if (event.key.length === 1 && !/[0-9\- ]/.test(event.key)) {
      event.preventDefault(); // a code is digits and separators
    } else if (event.key.length === 1) {
      overtype(event);
    }
  });

  /** The digit index at the cursor: the first digit at or after it. */
  function digitAtCursor() {
    return (field.value.slice(0, field.selectionStart).match(/[0-9]/g) || []).length;
  }

  function caretToDigit(index) {
    let seen = 0;
    for (let at = 0; at < field.value.length; at++) {
      if (/[0-9]/.test(field.value[at]) && seen++ === index) {
        field.focus();
        field.setSelectionRange(at, at);
        break;
      }
    }
    markCursor();
  }

  function markCursor() {
    const index = String(digitAtCursor());
    document.querySelectorAll('#boxes rect, #readout .digit').forEach((element) => {
      element.classList.toggle('at-cursor', element.dataset.index === index);
    });
  }

  ['keyup', 'click', 'input', 'focus'].forEach((name) => field.addEventListener(name, markCursor));
  field.addEventListener('input', () => field.classList.remove('invalid'));
  $('key-form').addEventListener('submit', (event) => event.preventDefault());

  function showRate() {
    if (startedAt === null) return;
    const now = Date.now();
    const from = Math.max(startedAt, now - RATE_WINDOW_MS);
    const minutes = (now - from) / 60000;
    const recent = keyTimes.filter((t) => t >= from).length;
    $('rate').textContent = minutes < 10 / 60 && recent < 3 ? '–' : (recent / Math.max(minutes, 1 / 60)).toFixed(1);
  }

  async function renewClaims() {
    if (held.size === 0) return;
    try {
      const paths = [...held];
      const answer = await api('POST', 'api/renew', {paths});
      paths.filter((path) => !answer.held.includes(path)).forEach((path) => {
        held.delete(path);
        lost.add(path);
        if (current && current.path === path) {
          setStatus(`${path} was away too long and went to another station: press Enter or ${config.unreadable_key} to move on.`,
            'error');
        }
      });
    } catch (error) {
      setStatus(`Cannot renew this station's claims (${error.message}).`, 'error');
    }
  }

  window.addEventListener('pagehide', () => {
    if (held.size === 0) return;
    const body = new Blob([JSON.stringify({paths: [...held]})], {type: 'application/json'});
    navigator.sendBeacon('api/release', body);
  });

  window.keyingSettled = () => submissions;

  async function start() {
    try {
      config = await api('GET', 'api/state');
    } catch (error) {
      setStatus(`Cannot reach the station's app: ${error.message}`, 'error');
      return;
    }
    $('run').textContent = config.run;
    $('station').textContent = config.station;
    $('unreadable-key').textContent = config.unreadable_key;
    showProgress(config.progress);
    setInterval(showRate, 1000);
    setInterval(renewClaims, (config.claim_seconds * 1000) / 3);
    advance();
  }

  start();
})();
