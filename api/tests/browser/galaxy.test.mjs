// Browser test of the page at `/`: headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core, which downloads no browser) loads the galaxy, two pages connect to the live
// push, one posts a node as a guest, both see it arrive, and both see it turn from pending to
// analysed (topic and emotion) when the pipeline's second event comes, all without a single
// Content-Security-Policy violation. Run by
// hack/checks/browser.sh, which starts the AI server and the API and sets MUTR_URL.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.MUTR_URL;
assert.ok(base, "MUTR_URL is not set");
const executablePath = process.env.MUTR_CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 20_000;

const browser = await chromium.launch({
  executablePath,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});

try {
  const errors = [];
  async function openPage() {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on("pageerror", (err) => errors.push(err.message));
    // The page must pass its own Content-Security-Policy: every violation (a blocked script,
    // style, connection) is recorded from the first byte, and so is Chromium's console report.
    await page.addInitScript(() => {
      window.__cspViolations = [];
      document.addEventListener("securitypolicyviolation", (e) =>
        window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    page.on("console", (msg) => {
      const text = msg.text();
      // The probe at the end violates the policy on purpose.
      if (/Content.Security.Policy/i.test(text) && !text.includes("csp-probe.invalid")) errors.push(text);
    });
    const response = await page.goto(base + "/");
    assert.equal(response.status(), 200);
    const csp = response.headers()["content-security-policy"] || "";
    assert.match(csp, /script-src 'self'/, "the page carries its policy");
    await page.waitForSelector('#live[data-state="live"]');
    return page;
  }

  const poster = await openPage();
  const watcher = await openPage();
  assert.equal(await poster.title(), "MUTR galaxy");
  // The stylesheet loaded (the page has no inline style left).
  assert.equal(await poster.evaluate(() => getComputedStyle(document.body).backgroundColor), "rgb(5, 6, 13)");
  const before = Number(await watcher.textContent("#count"));

  const marker = `브라우저 시험 ${Date.now()}`;
  await poster.fill("#content", marker);
  await poster.click("#post");

  // The node arrives over STOMP (the page does not add it from the POST answer).
  for (const page of [poster, watcher]) {
    await page.waitForSelector(`#recent li .content >> text="${marker}"`);
  }
  await watcher.waitForFunction((n) => Number(document.querySelector("#count").textContent) > n, before);

  // The analysis arrives as a second event: the entry turns from "analysing…" to its topic, with
  // the emotion's colour.
  const entry = (page) => page.locator("#recent li", { hasText: marker });
  for (const page of [poster, watcher]) {
    await page.waitForFunction(
      (m) => [...document.querySelectorAll("#recent li")].some(
        (li) => li.textContent.includes(m) && li.dataset.status === "COMPLETED"),
      marker,
      { timeout: 60_000 },
    );
    const topic = await entry(page).locator(".topic").textContent();
    assert.ok(topic.trim().length > 0 && topic !== "analysing…", `topic shown: ${topic}`);
    const colour = await entry(page).locator(".emotion").evaluate((e) => e.style.background);
    assert.ok(colour.length > 0, "emotion colour shown");
  }
  assert.match(await poster.textContent("#me"), /^guest: \S+_\S+_\d{4}$/);
  assert.equal(await poster.inputValue("#content"), "", "the box is cleared after posting");

  // Reload: the node is now part of the galaxy drawn from /viz.
  await watcher.reload();
  await watcher.waitForSelector(`#recent li .content >> text="${marker}"`);

  // Bad input is shown, not swallowed: whitespace-only content is refused by the API.
  await poster.fill("#content", "   ");
  await poster.click("#post");
  await poster.waitForFunction(() => document.querySelector("#error").textContent.length > 0);

  for (const page of [poster, watcher]) {
    assert.deepEqual(await page.evaluate(() => window.__cspViolations), [], "no CSP violations");
  }
  // The check above can fail: something the policy forbids is reported.
  const probe = await poster.evaluate(() => new Promise((resolve) => {
    document.addEventListener("securitypolicyviolation", (e) => resolve(e.violatedDirective), { once: true });
    const img = document.createElement("img");
    img.src = "http://csp-probe.invalid/x.png";
    document.body.append(img);
  }));
  assert.match(probe, /img-src/);

  assert.deepEqual(errors, [], "no script errors or CSP reports on the page");
  console.log("browser test passed: the posted node appeared live on both pages and turned analysed");
} finally {
  await browser.close();
}
