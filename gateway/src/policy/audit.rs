//! Phase 8's audit half: each request's event goes through a bounded queue to a worker thread,
//! which hands them in batches to the auditor plugin and writes the records it returns (JSON
//! lines) to stdout or a file with rotation. A full queue blocks the request or drops the
//! event and counts it, as configured; an auditor that fails loses its batch, counted and
//! logged, and never fails a request. `flush` writes everything queued before it.

use super::auditor::Auditor;
use super::convert::{self, AuditEventView};
use super::engine::PluginEngine;
use super::reload::{AuditorSlot, Reload};
use super::PolicyError;
use crate::config::AuditConfig;
use crate::describe::{Describe, Description};
use crate::identity::Identity;
use crate::method::Method;
use crate::metrics::PluginMetrics;
use std::io::Write;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

pub use super::authorizer::bindings::keygate::plugin::types::{ServedBy, Verdict};

/// The audit's word for an allowed request: in a namespace or not.
pub fn allowed(namespaced: bool) -> Verdict {
    if namespaced {
        Verdict::AllowInNamespace
    } else {
        Verdict::Allow
    }
}

/// One finished request.
pub struct Event {
    time_us: u64,
    identity: Option<Identity>,
    description: Description,
    decision: Verdict,
    status: Option<(u32, String)>,
    revision: i64,
    latency_us: u64,
    served_by: ServedBy,
}

/// A request being timed for its audit event.
pub struct Pending {
    time_us: u64,
    started: Instant,
    description: Description,
}

impl Pending {
    /// The request, as the caller named it.
    pub fn description(&self) -> &Description {
        &self.description
    }
}

enum Msg {
    Event(Box<Event>),
    Flush(oneshot::Sender<()>),
}

pub struct Audit {
    tx: mpsc::Sender<Msg>,
    drop_when_full: bool,
    metrics: PluginMetrics,
    slot: Arc<AuditorSlot>,
}

impl Audit {
    /// Loads the auditor and starts the worker; `None` when no auditor is configured.
    pub fn start(
        config: &AuditConfig,
        engine: &Arc<PluginEngine>,
        metrics: &PluginMetrics,
    ) -> Result<Option<Audit>, PolicyError> {
        if config.path.is_empty() {
            return Ok(None);
        }
        let (slot, auditor) = AuditorSlot::load(config, engine, metrics)?;
        let slot = Arc::new(slot);
        let output = Output::open(&config.output, config.rotate_bytes)
            .map_err(|e| PolicyError::Engine(format!("audit output {}: {e}", config.output)))?;
        let (tx, rx) = mpsc::channel(config.queue);
        let worker = Worker {
            rx,
            auditor,
            slot: slot.clone(),
            output,
            batch: config.batch,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || worker.run())
            .map_err(|e| PolicyError::Engine(e.to_string()))?;
        Ok(Some(Audit {
            tx,
            drop_when_full: config.on_full == "drop",
            metrics: metrics.clone(),
            slot,
        }))
    }

    /// What reloads the auditor when its file changes.
    pub fn reloader(&self) -> Arc<dyn Reload> {
        self.slot.clone()
    }

    /// Starts timing a request.
    pub fn begin<T: Describe>(method: &'static Method, message: &T) -> Pending {
        Pending {
            time_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            started: Instant::now(),
            description: Description::of(method, message),
        }
    }

    /// The event of a stream's opening, which names no key of its own.
    pub fn begin_stream(method: &'static Method) -> Pending {
        Self::begin_described(Description::new(method))
    }

    /// The event of a request already described (a message inside a stream).
    pub fn begin_described(description: Description) -> Pending {
        Pending {
            time_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            started: Instant::now(),
            description,
        }
    }

    /// Queues the event of a finished request.
    pub async fn finish(
        &self,
        pending: Pending,
        identity: Option<&Identity>,
        decision: Verdict,
        outcome: Result<Option<i64>, &Status>,
        served_by: ServedBy,
    ) {
        let event = Event {
            time_us: pending.time_us,
            identity: identity.cloned(),
            description: pending.description,
            decision,
            status: outcome
                .as_ref()
                .err()
                .map(|s| (s.code() as u32, s.message().to_string())),
            revision: outcome.ok().flatten().unwrap_or(0),
            latency_us: pending.started.elapsed().as_micros() as u64,
            served_by,
        };
        let msg = Msg::Event(Box::new(event));
        if self.drop_when_full {
            if self.tx.try_send(msg).is_err() {
                self.metrics
                    .audit_events
                    .with_label_values(&["dropped"])
                    .inc();
            }
        } else if self.tx.send(msg).await.is_err() {
            self.metrics
                .audit_events
                .with_label_values(&["failed"])
                .inc();
        }
    }

    /// Returns once everything queued before it is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// How long the worker waits after the first event of a batch for more to arrive.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

struct Worker {
    rx: mpsc::Receiver<Msg>,
    auditor: Auditor,
    /// Where a reloaded auditor waits to take over, between two batches.
    slot: Arc<AuditorSlot>,
    output: Output,
    batch: usize,
    metrics: PluginMetrics,
}

impl Worker {
    fn run(mut self) {
        let mut events = Vec::with_capacity(self.batch);
        let mut flushes = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            take(first, &mut events, &mut flushes);
            self.drain(&mut events, &mut flushes);
            // Less than a batch waiting: let one gather, for one plugin call and one write for
            // many events and one wake-up of this thread instead of one per request. A full
            // batch goes at once; sleeping then would cap the audit at one batch per GATHER.
            if events.len() < self.batch {
                std::thread::sleep(GATHER);
                self.drain(&mut events, &mut flushes);
            }
            self.write(&mut events);
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
        self.write(&mut events);
    }

    /// Takes what is queued, up to a whole batch of events.
    fn drain(&mut self, events: &mut Vec<Event>, flushes: &mut Vec<oneshot::Sender<()>>) {
        while events.len() < self.batch {
            match self.rx.try_recv() {
                Ok(msg) => take(msg, events, flushes),
                Err(_) => break,
            }
        }
    }

    fn write(&mut self, events: &mut Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if let Some(reloaded) = self.slot.take() {
            self.auditor = reloaded;
        }
        let batch: Vec<AuditEventView> = events.iter().map(view).collect();
        let fate = match self.auditor.on_batch(&batch) {
            Ok(records) => {
                for record in records {
                    if let Err(e) = self.output.line(&record) {
                        tracing::error!("audit output: {e}");
                    }
                }
                if let Err(e) = self.output.flush() {
                    tracing::error!("audit output: {e}");
                }
                "batched"
            }
            Err(failure) => {
                tracing::error!(
                    plugin = %self.auditor.name,
                    events = batch.len(),
                    "auditor failed, its batch is lost: {failure}"
                );
                "failed"
            }
        };
        self.metrics
            .audit_events
            .with_label_values(&[fate])
            .inc_by(batch.len() as u64);
        drop(batch);
        events.clear();
    }
}

fn take(msg: Msg, events: &mut Vec<Event>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match msg {
        Msg::Event(event) => events.push(*event),
        Msg::Flush(done) => flushes.push(done),
    }
}

fn view(e: &Event) -> AuditEventView<'_> {
    let (status_code, status_message) = e.status.as_ref().map_or((0, ""), |(c, m)| (*c, m));
    AuditEventView {
        time_us: e.time_us,
        identity: convert::identity_view(e.identity.as_ref()),
        request: convert::request_view(&e.description),
        decision: e.decision,
        status_code,
        status_message,
        revision: e.revision,
        latency_us: e.latency_us,
        served_by: e.served_by,
    }
}

/// A stream's auditor and the caller who opened it: each message of the stream is an event.
pub struct StreamAudit {
    pub audit: Arc<Audit>,
    pub who: Option<Identity>,
}

impl StreamAudit {
    /// Queues the event of one message of the stream.
    pub async fn finish(
        &self,
        pending: Pending,
        decision: Verdict,
        outcome: Result<Option<i64>, &Status>,
        served_by: ServedBy,
    ) {
        (self.audit)
            .finish(pending, self.who.as_ref(), decision, outcome, served_by)
            .await;
    }
}

/// Records gathered before a write to the output file: a batch is usually one write.
const OUTPUT_BUFFER: usize = 256 << 10;

/// Where records are written.
enum Output {
    Stdout,
    File {
        path: String,
        file: std::io::BufWriter<std::fs::File>,
        written: u64,
        rotate_bytes: u64,
    },
}

impl Output {
    fn open(target: &str, rotate_bytes: u64) -> std::io::Result<Self> {
        if target == "stdout" {
            return Ok(Output::Stdout);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)?;
        let written = file.metadata()?.len();
        Ok(Output::File {
            path: target.to_string(),
            file: std::io::BufWriter::with_capacity(OUTPUT_BUFFER, file),
            written,
            rotate_bytes,
        })
    }

    fn line(&mut self, record: &str) -> std::io::Result<()> {
        match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(record.as_bytes())?;
                out.write_all(b"\n")
            }
            Output::File {
                path,
                file,
                written,
                rotate_bytes,
            } => {
                if *rotate_bytes > 0 && *written >= *rotate_bytes {
                    file.flush()?;
                    std::fs::rename(&*path, format!("{path}.1"))?;
                    *file = std::io::BufWriter::with_capacity(
                        OUTPUT_BUFFER,
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&*path)?,
                    );
                    *written = 0;
                }
                file.write_all(record.as_bytes())?;
                file.write_all(b"\n")?;
                *written += record.len() as u64 + 1;
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout => std::io::stdout().flush(),
            Output::File { file, .. } => file.flush(),
        }
    }
}
