// pirec-web's page in a real browser (issue 15, item 6): Debian's chromium, headless, driven by
// puppeteer-core. Starts the eye-tracker simulator, `pirec record` with a synthetic camera, the eye
// tracker and notes, and pirec-web; then, in the page: start a session (label, participant),
// watch the camera's frame counter rise, type a note with commas, quotes and a leading '=' and
// find it exact in notes.csv, change trial, check that the previews are not blank (pixel
// variance), stop, download a file, remux the session with the button, log in with a password on a
// second pirec-web, and survive a controller restart (the page reconnects).
// With --screenshot FILE it saves the console while recording.
//
// usage: node browser.mjs BUILD_DIR [--screenshot FILE]
// Exit 0 pass, 1 fail, 77 skipped (no chromium).
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const build = path.resolve(process.argv[2] || 'build');
const apps = path.join(build, 'apps');
const shotAt = process.argv.indexOf('--screenshot');
const shot = shotAt > 0 ? path.resolve(process.argv[shotAt + 1]) : null;
const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
const NOTE = '=1+2, "quoted", and, commas';
const fails = [];
const children = [];

function check(ok, what) {
  console.log((ok ? 'ok   ' : 'FAIL ') + what);
  if (!ok) fails.push(what);
}

function start(cmd, args, logName, work) {
  const out = fs.openSync(path.join(work, logName + '.out'), 'w');
  const err = fs.openSync(path.join(work, logName + '.err'), 'w');
  const p = spawn(cmd, args, { stdio: ['ignore', out, err] });
  children.push(p);
  return p;
}

async function until(what, fn, timeoutMs = 60000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const readLine = (file, re) => {
  try {
    const m = fs.readFileSync(file, 'utf8').match(re);
    return m;
  } catch (e) {
    return null;
  }
};

async function setup(work) {
  const sim = start(path.join(apps, 'pirec-eyesim'), ['--host', '127.0.0.1', '--gaze-hz', '200', '--fps', '15'], 'eyesim', work);
  const ports = await until('pirec-eyesim', () => readLine(path.join(work, 'eyesim.out'), /http=(\d+) rtsp=(\d+)/));
  const conf = path.join(work, 'pirec.conf');
  fs.writeFileSync(conf, `[session]\noutput_dir = ${work}/data\nremux_after = false\n[control]\nsocket = ${work}/control.sock\n` +
    `[camera.cam0]\nsource = lavfi\nsize = 320x240\nfps = 15\n` +
    `[eyetracker]\nenabled = true\naddress = 127.0.0.1:${ports[1]}\nrtsp_port = ${ports[2]}\n`);
  fs.mkdirSync(path.join(work, 'data'));
  const rec = () => start(path.join(apps, 'pirec'), ['record', '-c', conf, '--wait'], 'record', work);
  let recorder = rec();
  start(path.join(apps, 'pirec-web'), ['-c', conf, '--port', '0', '--quiet'], 'web', work);
  const url = await until('pirec-web', () => readLine(path.join(work, 'web.out'), /console at (\S+)/));
  return { url: url[1], conf, sim, restart: async () => {
    recorder.kill('SIGKILL');
    await new Promise((r) => recorder.once('exit', r));
    recorder = rec();
  } };
}

const text = (page, sel) => page.$eval(sel, (e) => e.textContent);

// Frames written in the camera's tile ("frames 123 (15.0/s)").
async function frames(page) {
  const t = await page.$eval('[data-module=cam0]', (e) => e.textContent).catch(() => '');
  const m = t.match(/frames(\d+)/);
  return m ? Number(m[1]) : -1;
}

async function scenario(page, env, work) {
  await page.goto(env.url);
  await until('the console to connect', async () => (await text(page, '#conn')) === 'connected');
  check(true, 'the page connects (WebSocket) and shows the controller');
  await page.type('#label', 'browser');
  await page.type('#participant', 'P07');
  await page.click('#start');
  await until('recording', async () => (await text(page, '#state')).startsWith('recording'));
  const f0 = await until('the camera tile', async () => { const f = await frames(page); return f >= 0 ? f + 1 : 0; }) - 1;
  const f1 = await until('frames to rise', async () => { const f = await frames(page); return f > f0 + 10 ? f : 0; });
  check(f1 > f0, `the camera's frame counter rises (${f0} -> ${f1})`);
  await page.type('#note', NOTE);
  await page.keyboard.press('Enter');
  await until('the note to be saved', async () => (await text(page, '#message')).startsWith('noted'));
  const st = JSON.parse(execFileSync(path.join(apps, 'pirec'), ['status', '--json', '--socket', `${work}/control.sock`]));
  const expected = '"\'' + NOTE.replace(/"/g, '""') + '"';
  // "noted" means queued for notes.csv: on disk within milliseconds, later on a loaded machine.
  const notes = await until('the note in notes.csv', () => {
    const t = fs.readFileSync(path.join(st.session_dir, 'notes.csv'), 'utf8');
    return t.includes(expected) ? t : null;
  }, 10000).catch(() => fs.readFileSync(path.join(st.session_dir, 'notes.csv'), 'utf8'));
  check(notes.includes(expected), `the note is in notes.csv exactly (${expected})`);
  check(notes.includes('participant: P07'), 'the participant is noted at the start');
  await page.click('#trial');
  await until('trial 2', async () => (await text(page, '#state')).includes('trial 2'));
  check(true, 'next trial: the page shows trial 2');
  await previews(page);
  await gazeRing(page);
  await until('events in the timeline', async () => (await text(page, '#events')).includes('trial_start'));
  check(true, 'the events timeline shows the trials');
  if (shot) {
    await page.screenshot({ path: shot, fullPage: true });
    console.log('screenshot: ' + shot);
  }
  await page.keyboard.down('Alt');
  await page.keyboard.press('x');
  await page.keyboard.up('Alt');
  await until('idle', async () => (await text(page, '#state')).startsWith('idle'));
  check(true, 'Alt+X stops the session');
  return st.session_dir;
}

async function previews(page) {
  const imgs = await page.$$('.preview img, .preview canvas');
  if (!imgs.length) {
    console.log('previews: none on this page');
    return;
  }
  for (const handle of imgs) {
    const variance = await until('a preview', () => handle.evaluate((el) => {
      const c = document.createElement('canvas');
      const w = el.naturalWidth || el.width, h = el.naturalHeight || el.height;
      if (!w || !h) return 0;
      c.width = w; c.height = h;
      const g = c.getContext('2d');
      g.drawImage(el, 0, 0);
      const d = g.getImageData(0, 0, w, h).data;
      let s = 0, s2 = 0, n = 0;
      for (let i = 0; i < d.length; i += 4) { const v = d[i] + d[i + 1] + d[i + 2]; s += v; s2 += v * v; n++; }
      const mean = s / n;
      return s2 / n - mean * mean;
    }), 60000);
    const name = await handle.evaluate((el) => el.closest('[data-module]').dataset.module);
    check(variance > 100, `the ${name} preview is not blank (pixel variance ${variance.toFixed(0)})`);
    if (process.env.PIREC_SAVE_PREVIEWS)
      fs.writeFileSync(path.join(process.env.PIREC_SAVE_PREVIEWS, name + '.jpg'),
        Buffer.from((await handle.evaluate((el) => el.src)).split(',')[1], 'base64'));
  }
}

// The eye tracker's scene preview carries the gaze: the reply says where the ring is drawn, and the
// picture is red there (north, east, south and west on the ring).
async function gazeRing(page) {
  const got = await until('a scene preview with the gaze', () => page.evaluate(async () => {
    const r = await fetch('/api/preview?module=eyetracker&max_width=320');
    const j = await r.json();
    if (j.reply !== 'preview' || j.gaze_x === undefined) return null;
    const img = new Image();
    img.src = 'data:image/jpeg;base64,' + j.jpeg;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const rad = Math.max(8, Math.floor(c.width / 24)), mid = rad - Math.floor(rad / 6);
    const red = [[mid, 0], [-mid, 0], [0, mid], [0, -mid]].filter(([dx, dy]) => {
      const x = j.gaze_x + dx, y = j.gaze_y + dy;
      if (x < 0 || y < 0 || x >= c.width || y >= c.height) return true; // off the picture: not judged
      const [R, G, B] = g.getImageData(x, y, 1, 1).data;
      return R > G + 60 && R > B + 60;
    }).length;
    return { x: j.gaze_x, y: j.gaze_y, w: c.width, red };
  }), 30000);
  check(got.red === 4, `the scene preview has the gaze ring at (${got.x}, ${got.y}) of ${got.w} px: red at ${got.red} of 4 points`);
}

async function download(page, cdp, sessionDir, work) {
  const dir = path.join(work, 'downloads');
  fs.mkdirSync(dir);
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: dir });
  const name = path.basename(sessionDir);
  await until('the session in the list', async () => (await text(page, '#sessions')).includes(name));
  await page.$eval(`#sessions a[href="/files/${name}/events.csv"]`, (a) => a.click());
  const got = await until('the download', () => fs.existsSync(path.join(dir, 'events.csv')) &&
    fs.readFileSync(path.join(dir, 'events.csv')));
  check(got.equals(fs.readFileSync(path.join(sessionDir, 'events.csv'))), 'events.csv downloads byte for byte');
}

// The remux button: the controller runs pirec-remux; the page shows the progress and the verdict.
async function remuxButton(page, sessionDir) {
  const name = path.basename(sessionDir);
  const box = `#sessions [data-session="${name}"] .remux`;
  await page.$eval(`${box} button`, (b) => b.click());
  const result = await until('the remux verdict', async () => {
    const t = await text(page, `${box} .result`).catch(() => '');
    return /^(done|failed)/.test(t) ? t : null;
  }, 90000);
  const mp4 = fs.readdirSync(path.join(sessionDir, 'cam0')).filter((f) => f.endsWith('.mp4'));
  check(result.startsWith('done') && mp4.length > 0, `the remux button: the page says "${result}", MP4s ${mp4.join(', ')}`);
  await until('the list to say remux: done', async () =>
    (await text(page, `#sessions [data-session="${name}"] summary`)).includes('remux: done'), 30000);
  check(true, 'the session list shows remux: done');
}

// Password login: a second pirec-web with [web] password_hash on the same controller; the page asks
// for the password, says when it is wrong, and opens the console for the right one.
async function passwordLogin(browser, env, work) {
  const hash = execFileSync(path.join(apps, 'pirec-web'), ['--hash-password'], { input: 'opensesame\n' }).toString().trim();
  const conf = path.join(work, 'password.conf');
  fs.writeFileSync(conf, fs.readFileSync(env.conf, 'utf8') + `[web]\npassword_hash = ${hash}\n`);
  fs.writeFileSync(path.join(work, 'web2.out'), '');
  start(path.join(apps, 'pirec-web'), ['-c', conf, '--port', '0', '--quiet'], 'web2', work);
  const url = (await until('the second pirec-web', () => readLine(path.join(work, 'web2.out'), /console at (\S+)/)))[1];
  const page = await browser.newPage();
  page.on('pageerror', (e) => check(false, 'no error in the login page: ' + e.message));
  await page.goto(url);
  await page.waitForSelector('#loginform:not([hidden])');
  check(await page.$eval('main', (m) => m.hidden), 'with a password the page shows the login form only');
  await page.type('#password', 'wrong');
  await page.click('#login');
  await until('the refusal', async () => (await text(page, '#loginmsg')).includes('wrong password'), 30000);
  check(true, 'a wrong password: the page says so');
  await page.$eval('#password', (i) => { i.value = ''; });
  await page.type('#password', 'opensesame');
  await page.keyboard.press('Enter');
  await until('the console after login', async () => (await text(page, '#conn')) === 'connected', 30000);
  check(await page.$eval('#loginform', (f) => f.hidden) && !(await page.$eval('#logout', (b) => b.hidden)),
    'the right password opens the console (WebSocket connected), with a Log out button');
  await page.close();
}

async function main() {
  if (!chromium) {
    console.log('browser: skipped: no chromium (apt install chromium)');
    return 77;
  }
  let puppeteer;
  try {
    puppeteer = (await import('puppeteer-core')).default;
  } catch (e) {
    console.log('browser: skipped: puppeteer-core is not installed (cd tests/web && npm ci)');
    return 77;
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pirec-browser.'));
  const env = await setup(work);
  const browser = await puppeteer.launch({ executablePath: chromium, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    page.on('pageerror', (e) => check(false, 'no error in the page: ' + e.message));
    const cdp = await browser.target().createCDPSession();
    const sessionDir = await scenario(page, env, work);
    await download(page, cdp, sessionDir, work);
    await remuxButton(page, sessionDir);
    await passwordLogin(browser, env, work);
    await env.restart();
    await until('the page to see the controller go', async () => (await text(page, '#conn')) !== 'connected', 30000)
      .catch(() => console.log('(the restart was quicker than a push)'));
    await until('the page to reconnect', async () => (await text(page, '#conn')) === 'connected' &&
      (await text(page, '#state')).startsWith('idle'));
    check(true, 'the page survives a controller restart');
  } finally {
    await browser.close();
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  }
  console.log('browser: ' + (fails.length ? 'FAIL: ' + fails.join('; ') : 'pass'));
  return fails.length ? 1 : 0;
}

main().then((rc) => process.exit(rc), (e) => {
  console.log('browser: FAIL: ' + e.message);
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  process.exit(1);
});
