//! Real processes: the AI server with the tiny models, and `mutr-api serve`, each on free ports,
//! which a test may kill (`SIGKILL`), pause (`SIGSTOP`), terminate (`SIGTERM`) and start again.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use mutr_api::analysis::ai::{AiClient, AiHealth};

use super::services::free_port;

/// Waits until `up` says the process in `child` is up, for at most a minute; an error with the
/// tail of `log` when it exits first or the minute passes (the child is then forgotten).
async fn wait_up<F, Fut>(
    child: &mut Option<Child>,
    log: &Path,
    what: &str,
    mut up: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if up().await {
            return Ok(());
        }
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            *child = None;
            return Err(format!("{what} exited ({status}):\n{}", tail(log, 40)));
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not come up:\n{}", tail(log, 40)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The path of a binary of this workspace, next to `mutr-api`'s; built when missing (a plain
/// `cargo test -p mutr-api` builds only this package's binaries).
pub fn binary(name: &str) -> PathBuf {
    let api = PathBuf::from(env!("CARGO_BIN_EXE_mutr-api"));
    let path = api.with_file_name(name);
    if !path.exists() {
        let package = name.trim_end_matches(".exe");
        let target_dir = api
            .parent()
            .and_then(Path::parent)
            .expect("target folder")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", package, "--bin", package])
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building {name} failed");
    }
    path
}

/// The folder with the tiny test models: `MUTR_MODEL_DIR`, else `../shared/models` beside the
/// repository; none lets the AI server look in its download cache.
pub fn model_dir() -> Option<PathBuf> {
    std::env::var_os("MUTR_MODEL_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
            shared.join("stories260K.gguf").exists().then_some(shared)
        })
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {}", child.id());
}

fn log_file(what: &str) -> (PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!(
        "mutr-test-{what}-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let file = std::fs::File::create(&path).expect("log file");
    (path, file)
}

/// The last lines of a log, for a failure message.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `mutr-ai-server serve` with the tiny models on a free port.
pub struct AiServer {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl AiServer {
    /// Starts it with `extra` flags and waits until it answers `SERVING`. Free ports are picked
    /// by binding and releasing them, so another test may take one first: a start that fails is
    /// tried again on new ports.
    pub async fn start(extra: &[&str]) -> AiServer {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let metrics = free_port();
            let mut args: Vec<String> = [
                "serve",
                "--port",
                &port.to_string(),
                "--host",
                "127.0.0.1",
                "--metrics-addr",
                &format!("127.0.0.1:{metrics}"),
                "--profile",
                "tiny",
                "--parallel",
                "4",
                "--n-ctx",
                "512",
                "--n-threads",
                "1",
                "--drain-timeout",
                "2s",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            if let Some(dir) = model_dir() {
                args.push("--model-dir".to_owned());
                args.push(dir.display().to_string());
            }
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            let (log, _) = log_file("ai");
            let mut ai = AiServer {
                port,
                args,
                child: None,
                log,
            };
            match ai.spawn_and_wait().await {
                Ok(()) => return ai,
                Err(e) => last = e,
            }
        }
        panic!("mutr-ai-server did not start three times:\n{last}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again, on the same port) and waits until it is `SERVING`.
    pub async fn restart(&mut self) {
        if let Err(e) = self.spawn_and_wait().await {
            panic!("{e}");
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "AI server already running");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(binary("mutr-ai-server"))
            .args(&self.args)
            // No result cache: every analysis is computed.
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mutr-ai-server");
        self.child = Some(child);
        let client = AiClient::new(&self.url(), Duration::from_secs(5)).expect("client");
        wait_up(&mut self.child, &self.log, "mutr-ai-server", || async {
            client.health(Duration::from_secs(1)).await == AiHealth::Serving
        })
        .await
    }

    /// Kills the process (`SIGKILL`) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (`SIGSTOP`): it holds its connections and answers nothing.
    pub fn pause(&self) {
        signal(self.child.as_ref().expect("running"), "STOP");
    }

    /// Thaws a paused process (`SIGCONT`).
    pub fn resume(&self) {
        signal(self.child.as_ref().expect("running"), "CONT");
    }

    /// The process id, to resume it from another task.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Thaws the paused process `pid` (`SIGCONT`).
    pub fn resume_pid(pid: u32) {
        let status = Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -CONT {pid}");
    }
}

impl Drop for AiServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A paused process ignores SIGKILL only until it is continued.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `mutr-api serve` as a process of its own, configured by environment variables, as a pod.
pub struct ApiProcess {
    pub port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub log: PathBuf,
}

impl ApiProcess {
    /// Starts it with `env` (on top of a free `MUTR_HTTP_ADDR` and quiet logs) and waits until
    /// `/readyz` answers 200; tried again on a new port when another test took the first.
    pub async fn start(env: &[(&str, &str)]) -> ApiProcess {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let (log, _) = log_file("api");
            let mut env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            env.push(("MUTR_HTTP_ADDR".to_owned(), format!("127.0.0.1:{port}")));
            let mut api = ApiProcess {
                port,
                env,
                child: None,
                log,
            };
            match api.spawn_and_wait().await {
                Ok(()) => return api,
                Err(e) => last = e,
            }
        }
        panic!("mutr-api did not start three times:\n{last}");
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again, on the same port) and waits until it is ready.
    pub async fn restart(&mut self) {
        if let Err(e) = self.spawn_and_wait().await {
            panic!("{e}");
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "mutr-api already running");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)
            .expect("log");
        let mut command = Command::new(binary("mutr-api"));
        command
            .arg("serve")
            .env(
                "RUST_LOG",
                std::env::var("MUTR_TEST_API_LOG").unwrap_or_else(|_| "info,sqlx=warn".to_owned()),
            )
            .env("MUTR_SHUTDOWN_GRACE", "0s")
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().expect("start mutr-api"));
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.base());
        wait_up(&mut self.child, &self.log, "mutr-api", || async {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
        })
        .await
    }

    /// Kills the process (`SIGKILL`), as a crashed pod.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `SIGTERM` and waits for the exit (a pod being deleted), within `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, "TERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "mutr-api did not exit within {limit:?} of SIGTERM:\n{}",
                    tail(&self.log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("mutr-api log kept at {}", self.log.display());
        }
    }
}

/// Runs `mutr-api` once with `args` and `env`; its exit status and standard output.
pub fn run_api(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut command = Command::new(binary("mutr-api"));
    command.args(args).env("RUST_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run mutr-api");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
