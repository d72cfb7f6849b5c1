//! The coordinator's side of the worker processes: spawn copies of this binary, hand each a
//! job, exchange JSON lines, stop them (by the PIDs we started) when done or past a deadline.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::job::{Cmd, Job, Msg, Progress, Ready, WorkerResult};
use crate::stats::PubAgg;

pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    rx: mpsc::UnboundedReceiver<(usize, Option<Msg>)>,
    /// Latest progress per worker.
    pub progress: Vec<Progress>,
    /// Per worker, per publication sequence: the latest cumulative aggregate.
    pub pubs: Vec<BTreeMap<u64, PubAgg>>,
    pub ready: Vec<Option<Ready>>,
    pub results: Vec<Option<WorkerResult>>,
    pub exited: Vec<bool>,
    pub fatal: Vec<String>,
    last_print: Instant,
    started: Instant,
}

impl Fleet {
    pub async fn spawn(jobs: Vec<Job>) -> Result<Fleet, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let n = jobs.len();
        let mut children = Vec::with_capacity(n);
        let mut stdins = Vec::with_capacity(n);
        for (w, job) in jobs.iter().enumerate() {
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start worker {w}: {e}"))?;
            let mut stdin = child.stdin.take().expect("piped stdin");
            let mut line = serde_json::to_string(job).expect("jobs serialize");
            line.push('\n');
            stdin.write_all(line.as_bytes()).await.map_err(|e| format!("cannot send job to worker {w}: {e}"))?;
            stdin.flush().await.map_err(|e| format!("cannot send job to worker {w}: {e}"))?;
            let stdout = child.stdout.take().expect("piped stdout");
            let tx = tx.clone();
            tokio::task::spawn_local(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Msg>(&line) {
                        Ok(msg) => {
                            let _ = tx.send((w, Some(msg)));
                        }
                        Err(e) => eprintln!("worker {w}: unreadable message ({e}): {line}"),
                    }
                }
                let _ = tx.send((w, None));
            });
            children.push(child);
            stdins.push(Some(stdin));
        }
        Ok(Fleet {
            children,
            stdins,
            rx,
            progress: vec![Progress::default(); n],
            pubs: vec![BTreeMap::new(); n],
            ready: vec![None; n],
            results: vec![None; n],
            exited: vec![false; n],
            fatal: Vec::new(),
            last_print: Instant::now(),
            started: Instant::now(),
        })
    }

    pub fn workers(&self) -> usize {
        self.children.len()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|c| c.id()).collect()
    }

    pub async fn send_all(&mut self, cmd: Cmd) {
        let mut line = serde_json::to_string(&cmd).expect("commands serialize");
        line.push('\n');
        for (w, stdin) in self.stdins.iter_mut().enumerate() {
            if let Some(s) = stdin
                && (s.write_all(line.as_bytes()).await.is_err() || s.flush().await.is_err())
            {
                eprintln!("worker {w}: cannot send {cmd:?} (worker gone?)");
                *stdin = None;
            }
        }
    }

    fn handle(&mut self, w: usize, msg: Option<Msg>) {
        match msg {
            None => self.exited[w] = true,
            Some(Msg::Progress(mut p)) => {
                for [seq, min_us, max_us, count] in std::mem::take(&mut p.pubs) {
                    self.pubs[w].insert(seq, PubAgg { min_us, max_us, count });
                }
                self.progress[w] = p;
            }
            Some(Msg::Ready(r)) => self.ready[w] = Some(r),
            Some(Msg::Result(r)) => self.results[w] = Some(*r),
            Some(Msg::Fatal { error }) => {
                eprintln!("worker {w}: {error}");
                self.fatal.push(format!("worker {w}: {error}"));
                self.exited[w] = true;
            }
        }
    }

    /// Handles messages until `done(self)` holds or `deadline` passes; returns whether `done` held.
    /// Prints a progress line to stderr every few seconds.
    pub async fn pump_until(&mut self, deadline: Instant, mut done: impl FnMut(&Fleet) -> bool) -> bool {
        loop {
            while let Ok((w, msg)) = self.rx.try_recv() {
                self.handle(w, msg);
            }
            if done(self) {
                return true;
            }
            if self.last_print.elapsed() >= Duration::from_secs(3) {
                self.last_print = Instant::now();
                eprintln!("  [{:>5.1}s] {}", self.started.elapsed().as_secs_f64(), self.status());
            }
            let wake = deadline.min(Instant::now() + Duration::from_millis(500));
            match tokio::time::timeout_at(wake, self.rx.recv()).await {
                Ok(Some((w, msg))) => self.handle(w, msg),
                Ok(None) => return done(self),
                Err(_) if Instant::now() >= deadline => return done(self),
                Err(_) => {}
            }
        }
    }

    pub fn status(&self) -> String {
        let open: u64 = self.progress.iter().map(|p| p.open).sum();
        let errors: u64 = self.progress.iter().map(|p| p.errors).sum();
        let deliveries: u64 = self.progress.iter().map(|p| p.deliveries).sum();
        let api: u64 = self.progress.iter().map(|p| p.api_requests).sum();
        let mut s = format!("open {open}, connect errors {errors}, deliveries {deliveries}");
        if api > 0 {
            s.push_str(&format!(", api requests {api}"));
        }
        s
    }

    pub fn all_ready(&self, stage: usize) -> bool {
        self.ready.iter().zip(&self.exited).all(|(r, gone)| *gone || r.as_ref().is_some_and(|r| r.stage >= stage))
    }

    pub fn all_results(&self) -> bool {
        self.results.iter().zip(&self.exited).all(|(r, gone)| r.is_some() || *gone)
    }

    pub fn any_exited_early(&self) -> bool {
        self.exited.iter().zip(&self.results).any(|(gone, r)| *gone && r.is_none())
    }

    /// Waits until every worker reported `stage` ready.
    pub async fn wait_ready(&mut self, stage: usize, deadline: Instant) -> Result<(), String> {
        for r in &mut self.ready {
            if r.as_ref().is_some_and(|r| r.stage < stage) {
                *r = None;
            }
        }
        if !self.pump_until(deadline, |f| f.all_ready(stage)).await {
            return Err(format!("workers not ready in time ({})", self.status()));
        }
        if self.any_exited_early() {
            return Err(format!("a worker exited early: {}", self.fatal.join("; ")));
        }
        Ok(())
    }

    pub fn ready_open(&self) -> u64 {
        self.ready.iter().flatten().map(|r| r.open).sum()
    }

    /// Of [`Fleet::ready_open`], the stalled connections (they read nothing).
    pub fn ready_stalled(&self) -> u64 {
        self.ready.iter().flatten().map(|r| r.stalled).sum()
    }

    pub fn ready_errors(&self) -> u64 {
        self.ready.iter().flatten().map(|r| r.errors).sum()
    }

    /// Fails when no connection at all could be opened (bad URL, token, key...).
    pub fn require_open(&self) -> Result<(), String> {
        if self.ready_open() > 0 {
            return Ok(());
        }
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for r in self.ready.iter().flatten() {
            for (k, v) in &r.error_kinds {
                *kinds.entry(k.clone()).or_default() += v;
            }
        }
        Err(format!("no connection could be opened ({} errors: {kinds:?})", self.ready_errors()))
    }

    pub fn ready_elapsed(&self) -> Duration {
        Duration::from_millis(self.ready.iter().flatten().map(|r| r.elapsed_ms).max().unwrap_or(0))
    }

    pub fn deliveries(&self) -> u64 {
        self.progress.iter().map(|p| p.deliveries).sum()
    }

    pub fn pings(&self) -> u64 {
        self.progress.iter().map(|p| p.pings).sum()
    }

    /// Merged aggregate of one publication across workers (from progress reports).
    pub fn pub_agg(&self, seq: u64) -> PubAgg {
        let mut a = PubAgg::default();
        for w in &self.pubs {
            if let Some(p) = w.get(&seq) {
                a.merge(p);
            }
        }
        a
    }

    /// Asks for results and waits for them.
    pub async fn stop(&mut self, deadline: Instant) {
        self.send_all(Cmd::Stop).await;
        self.pump_until(deadline, |f| f.all_results()).await;
    }

    /// Closes stdins (workers exit on EOF), waits a little, then kills the ones still running.
    pub async fn shutdown(mut self) {
        for s in &mut self.stdins {
            *s = None;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.children {
            if tokio::time::timeout_at(deadline, child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}
