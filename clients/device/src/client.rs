//! The device client handle: what an application calls.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use iothub_proto::DeviceConnectionString;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::c2d::CloudToDeviceMessages;
use crate::driver::{Command, Driver, TwinAnswer, TwinRequest};
use crate::error::Error;
use crate::link::{self, Endpoint};
use crate::message::Message;
use crate::methods::{Handler, MethodRequest, MethodResponse};
use crate::options::ClientOptions;
use crate::shared::{ConnectionStatus, Shared};
use crate::twin::{DesiredUpdate, Twin};

/// Commands waiting for the connection; callers wait beyond this.
const COMMAND_QUEUE: usize = 1024;

fn boxed<F, Fut>(handler: F) -> Handler
where
    F: Fn(MethodRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = MethodResponse> + Send + 'static,
{
    Arc::new(move |request| Box::pin(handler(request)))
}

/// Sets up a device client: options and method handlers, registered before the first connection so that no
/// call arrives before its handler.
pub struct DeviceClientBuilder {
    connection_string: DeviceConnectionString,
    options: ClientOptions,
    handlers: HashMap<String, Handler>,
}

impl DeviceClientBuilder {
    /// Uses `options`.
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Answers direct method `name` with `handler`.
    pub fn on_method<F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(MethodRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = MethodResponse> + Send + 'static,
    {
        self.handlers.insert(name.into(), boxed(handler));
        self
    }

    /// Connects (retrying transient failures with back-off until `options.connect_timeout`) and starts the
    /// client. Fails at once on permanent errors: bad credentials, an untrusted certificate, bad options.
    pub async fn connect(self) -> Result<DeviceClient, Error> {
        let endpoint = Endpoint::new(&self.connection_string, &self.options)?;
        let deadline = tokio::time::Instant::now() + self.options.connect_timeout;
        let mut attempt = 0u32;
        let first = loop {
            let error = match tokio::time::timeout_at(deadline, link::open(&endpoint, false)).await {
                Ok(Ok(link)) => break link,
                Ok(Err(error)) if error.is_permanent() => return Err(error),
                Ok(Err(error)) => error,
                Err(_) => return Err(Error::Timeout(self.options.connect_timeout)),
            };
            attempt += 1;
            let delay = self.options.retry.delay(attempt);
            if !self.options.retry.allows(attempt + 1) || tokio::time::Instant::now() + delay >= deadline {
                return Err(error);
            }
            tracing::debug!(%error, ?delay, "first connection failed; retrying");
            tokio::time::sleep(delay).await;
        };
        let shared = Arc::new(Shared::new(self.handlers));
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let request_timeout = self.options.request_timeout;
        let driver = Driver::new(endpoint, self.options, shared.clone(), receiver);
        let task = tokio::spawn(driver.run(first));
        Ok(DeviceClient {
            device_id: self.connection_string.device_id,
            module_id: self.connection_string.module_id,
            commands,
            shared,
            request_timeout,
            driver: Mutex::new(Some(task)),
        })
    }
}

/// A connected device: direct methods, twin, telemetry, cloud-to-device messages. It reconnects by itself after transient failures and
/// renews its SAS token before it expires; `watch_status` tells how the connection is doing. Dropping it
/// closes the connection (in the background); `close` does it and waits.
pub struct DeviceClient {
    device_id: String,
    module_id: Option<String>,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    request_timeout: std::time::Duration,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl DeviceClient {
    /// A builder for the device in `connection_string` (`HostName=..;DeviceId=..;SharedAccessKey=..`, with an
    /// optional `GatewayHostName=host[:port]` to connect elsewhere than `HostName`). With `ModuleId=..` the
    /// client is that module: its own twin, methods and telemetry, beside its device's (no cloud-to-device
    /// messages: `messages()` then never yields).
    pub fn builder(connection_string: &str) -> Result<DeviceClientBuilder, Error> {
        Ok(DeviceClientBuilder {
            connection_string: connection_string.parse()?,
            options: ClientOptions::default(),
            handlers: HashMap::new(),
        })
    }

    /// Connects the device in `connection_string` with `options`.
    pub async fn from_connection_string(connection_string: &str, options: ClientOptions) -> Result<Self, Error> {
        Self::builder(connection_string)?.options(options).connect().await
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The module id, when the client is a module.
    pub fn module_id(&self) -> Option<&str> {
        self.module_id.as_deref()
    }

    /// Answers direct method `name` with `handler` from now on (replacing any earlier handler). Calls of methods
    /// without a handler are answered 501.
    pub fn on_method<F, Fut>(&self, name: impl Into<String>, handler: F)
    where
        F: Fn(MethodRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = MethodResponse> + Send + 'static,
    {
        self.shared.handlers.lock().unwrap_or_else(|p| p.into_inner()).insert(name.into(), boxed(handler));
    }

    /// Stops answering method `name`.
    pub fn remove_method(&self, name: &str) {
        self.shared.handlers.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    async fn twin_request(&self, request: TwinRequest) -> Result<TwinAnswer, Error> {
        let (done, answer) = oneshot::channel();
        self.commands.send(Command::Twin { request, done }).await.map_err(|_| self.shared.final_error())?;
        match tokio::time::timeout(self.request_timeout, answer).await {
            Err(_) => Err(Error::Timeout(self.request_timeout)),
            Ok(Err(_)) => Err(self.shared.final_error()),
            Ok(Ok(result)) => result,
        }
    }

    /// The device's twin: desired and reported properties with their versions.
    pub async fn get_twin(&self) -> Result<Twin, Error> {
        match self.twin_request(TwinRequest::Get).await? {
            TwinAnswer::Twin(twin) => Ok(twin),
            TwinAnswer::Version(_) => {
                Err(Error::Twin { status: 200, message: "the hub answered a GET with no twin".into() })
            }
        }
    }

    /// Patches the reported properties (`null` removes a property) and returns their new `$version`. A patch
    /// in flight when the connection drops is sent again, so it may be applied twice (at least once).
    pub async fn update_reported(&self, patch: &Value) -> Result<u64, Error> {
        if !patch.is_object() {
            return Err(Error::Config("a reported-properties patch must be a JSON object".into()));
        }
        let body = serde_json::to_vec(patch).map_err(|e| Error::Config(e.to_string()))?;
        match self.twin_request(TwinRequest::PatchReported(body)).await? {
            TwinAnswer::Version(version) => Ok(version),
            TwinAnswer::Twin(_) => {
                Err(Error::Twin { status: 200, message: "unexpected twin in a patch answer".into() })
            }
        }
    }

    /// Changes to the desired properties from now on: each patch, and after every reconnect the whole desired
    /// section again ([`DesiredUpdate::Full`]), so a change made while the device was away is never missed.
    pub fn desired_updates(&self) -> DesiredUpdates {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.shared.desired.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
        DesiredUpdates(receiver)
    }

    /// Cloud-to-device messages for the device. The first call subscribes to them; messages that came before
    /// (a session the hub kept from an earlier run) were held and are delivered first.
    ///
    /// Each message is acknowledged to the hub (which completes it) when it is taken from the returned stream,
    /// so a message the application never took is delivered again, after a reconnect at the latest: at least
    /// once. One listener at a time: calling this again replaces the previous listener, which ends, and
    /// messages not taken yet go to the new one.
    pub fn messages(&self) -> CloudToDeviceMessages {
        self.shared.c2d.listen()
    }

    /// Sends a telemetry message at QoS 1; returns once the hub acknowledged it. A message in flight when the
    /// connection drops is sent again after the reconnect (at least once).
    pub async fn send_telemetry(&self, message: Message) -> Result<(), Error> {
        let topic = match &self.module_id {
            Some(module_id) => {
                iothub_proto::topics::module_telemetry(&self.device_id, module_id, &message.property_bag())
            }
            None => iothub_proto::topics::telemetry(&self.device_id, &message.property_bag()),
        };
        let (done, acknowledged) = oneshot::channel();
        self.commands
            .send(Command::Publish { topic, payload: message.body, done })
            .await
            .map_err(|_| self.shared.final_error())?;
        acknowledged.await.unwrap_or_else(|_| Err(self.shared.final_error()))
    }

    /// The connection's state now.
    pub fn status(&self) -> ConnectionStatus {
        self.shared.status.borrow().clone()
    }

    /// A watch on the connection's state.
    pub fn watch_status(&self) -> watch::Receiver<ConnectionStatus> {
        self.shared.status.subscribe()
    }

    /// Disconnects cleanly (MQTT DISCONNECT) and waits for the background task to end. Calls still waiting fail
    /// with [`Error::Closed`].
    pub async fn close(self) {
        self.shared.closing.cancel();
        let task = self.driver.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for DeviceClient {
    fn drop(&mut self) {
        self.shared.closing.cancel();
    }
}

/// A stream of desired-property changes.
pub struct DesiredUpdates(mpsc::UnboundedReceiver<DesiredUpdate>);

impl DesiredUpdates {
    /// The next change; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<DesiredUpdate> {
        self.0.recv().await
    }
}

impl futures_util::Stream for DesiredUpdates {
    type Item = DesiredUpdate;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
