//! The one place Kubernetes API requests are paced, repeated and counted: a
//! token bucket (`qps` tokens per second, at most `burst` saved up) in the
//! client's service stack, which also holds every request back for as long
//! as the API server asked with a `429 Too Many Requests` answer's
//! `Retry-After`, and sends the throttled request again (a few times, when
//! its body can be sent again). kube's own retry is turned off where this
//! layer is used ([`ThrottleLayer::configure`]), so no request is repeated
//! anywhere else, and the counter counts requests as sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tracing::warn;

use crate::lock;

/// How long to hold requests back after a 429 without `Retry-After`; it
/// doubles with every further 429 to the same request.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest hold honoured, so a bogus header cannot stall the controller.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Times one request is sent while the API server answers 429.
pub const THROTTLED_ATTEMPTS: u32 = 5;

/// Throttle settings: `qps` requests per second on average, bursts of up to
/// `burst`. A `qps` of zero or less, or one that is not a finite number,
/// turns the rate limit off (429 answers are still honoured). A tiny `qps`
/// holds a request back for at most [`MAX_HOLD`].
#[derive(Clone, Debug)]
pub struct ThrottleLayer {
    qps: f64,
    burst: u32,
    requests: Option<Arc<dyn RequestCounter>>,
}

/// Counts the requests a [`ThrottleLayer`] sends (each repetition too); the
/// controller's metrics count them in a Prometheus counter.
pub trait RequestCounter: Send + Sync + std::fmt::Debug {
    /// One request was sent.
    fn request_sent(&self);
}

/// A plain count, for embedders without Prometheus.
impl RequestCounter for std::sync::atomic::AtomicU64 {
    fn request_sent(&self) {
        self.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<C: RequestCounter + ?Sized> RequestCounter for Arc<C> {
    fn request_sent(&self) {
        (**self).request_sent();
    }
}

impl ThrottleLayer {
    /// A layer allowing `qps` requests per second with bursts of `burst`.
    pub fn new(qps: f64, burst: u32) -> Self {
        Self {
            qps,
            burst: burst.max(1),
            requests: None,
        }
    }

    /// A layer without a rate limit, which still honours 429 answers.
    pub fn unlimited() -> Self {
        Self::new(0.0, 1)
    }

    /// Also counts every request sent (each repetition too) in `requests`.
    pub fn counting(mut self, requests: impl RequestCounter + 'static) -> Self {
        self.requests = Some(Arc::new(requests));
        self
    }

    /// Turns kube's own retry of throttled requests off in `config`: this
    /// layer is the one that repeats them.
    pub fn configure(config: &mut kube::Config) {
        config.default_retry = false;
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            pace: Arc::new(Pace {
                bucket: Mutex::new(Bucket::new(self.qps, self.burst)),
                blocked_until: Mutex::new(None),
            }),
            requests: self.requests.clone(),
        }
    }
}

/// What every request of one client waits for: the rate and the API
/// server's last `Retry-After`.
#[derive(Debug)]
struct Pace {
    bucket: Mutex<Bucket>,
    blocked_until: Mutex<Option<Instant>>,
}

impl Pace {
    /// Waits until the API server's hold is over and a token is taken.
    async fn turn(&self) {
        loop {
            let now = Instant::now();
            let blocked = *lock(&self.blocked_until);
            if let Some(until) = blocked.filter(|until| *until > now) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let taken = lock(&self.bucket).take(now);
            match taken {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    fn block_until(&self, until: Instant) {
        let mut blocked = lock(&self.blocked_until);
        if blocked.is_none_or(|current| current < until) {
            *blocked = Some(until);
        }
    }
}

/// The longest a request is held back for the client-side rate, however
/// small it is.
pub const MAX_HOLD: Duration = Duration::from_secs(3600);

/// Token bucket.
#[derive(Debug)]
struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(qps: f64, burst: u32) -> Self {
        Self {
            qps,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            refilled: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is available.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if !(self.qps.is_finite() && self.qps > 0.0) {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.qps;
            Err(Duration::try_from_secs_f64(wait).map_or(MAX_HOLD, |wait| wait.min(MAX_HOLD)))
        }
    }
}

/// A request body that can be sent again, when its kind allows.
pub trait RepeatableBody: Sized {
    /// A copy of the body to send again, `None` when it is a stream.
    fn repeat(&self) -> Option<Self>;
}

impl RepeatableBody for kube::client::Body {
    fn repeat(&self) -> Option<Self> {
        self.try_clone()
    }
}

impl RepeatableBody for () {
    fn repeat(&self) -> Option<Self> {
        Some(())
    }
}

/// A copy of `request` to send again, `None` when its body cannot be.
fn repeat_request<B: RepeatableBody>(request: &Request<B>) -> Option<Request<B>> {
    let mut copy = Request::new(request.body().repeat()?);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

/// The throttling service; see [`ThrottleLayer`].
#[derive(Debug)]
pub struct Throttle<S> {
    /// Shared with the response futures, which send repetitions.
    inner: Arc<tokio::sync::Mutex<S>>,
    pace: Arc<Pace>,
    requests: Option<Arc<dyn RequestCounter>>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Throttle<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: RepeatableBody + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each request waits for its turn and for the inner service in its
        // own future.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (inner, pace, requests) = (
            Arc::clone(&self.inner),
            Arc::clone(&self.pace),
            self.requests.clone(),
        );
        Box::pin(async move {
            let mut request = request;
            let mut hold = DEFAULT_RETRY_AFTER;
            let mut attempt = 1;
            loop {
                pace.turn().await;
                let again = if attempt < THROTTLED_ATTEMPTS {
                    repeat_request(&request)
                } else {
                    None
                };
                if let Some(requests) = &requests {
                    requests.request_sent();
                }
                let answer = {
                    let mut inner = inner.lock().await;
                    inner.ready().await?.call(request)
                };
                let response = answer.await?;
                if response.status() != StatusCode::TOO_MANY_REQUESTS {
                    return Ok(response);
                }
                let wait = retry_after(&response).unwrap_or(hold).min(MAX_RETRY_AFTER);
                hold = (hold * 2).min(MAX_RETRY_AFTER);
                pace.block_until(Instant::now() + wait);
                let Some(again) = again else {
                    warn!(attempt, "API server answered 429; giving the request up");
                    return Ok(response);
                };
                warn!(
                    attempt,
                    seconds = wait.as_secs_f64(),
                    "API server answered 429: holding requests back, then sending again"
                );
                request = again;
                attempt += 1;
            }
        })
    }
}

fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn any_rate_is_usable() {
        let start = Instant::now();
        let mut tiny = Bucket::new(1e-300, 1);
        assert_eq!(tiny.take(start), Ok(()));
        assert_eq!(tiny.take(start), Err(MAX_HOLD));
        for off in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut bucket = Bucket::new(off, 1);
            for _ in 0..3 {
                assert_eq!(bucket.take(start), Ok(()), "{off}");
            }
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(10.0, 3);
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        let wait = bucket.take(start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(bucket.take(start + Duration::from_millis(100)), Ok(()));
        // Idle time refills no more than the burst.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn zero_qps_means_unthrottled() {
        let mut bucket = Bucket::new(0.0, 1);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(bucket.take(now), Ok(()));
        }
    }

    fn answering(
        status: u16,
        retry_after: Option<&'static str>,
    ) -> impl Service<
        Request<()>,
        Response = Response<()>,
        Error = Infallible,
        Future = std::future::Ready<Result<Response<()>, Infallible>>,
    > {
        tower::service_fn(move |_request: Request<()>| {
            let mut response = Response::builder().status(status);
            if let Some(value) = retry_after {
                response = response.header(http::header::RETRY_AFTER, value);
            }
            std::future::ready(Ok(response.body(()).unwrap()))
        })
    }

    /// Sends one request once the service is ready.
    async fn send<S>(service: &mut S) -> Response<()>
    where
        S: Service<Request<()>, Response = Response<()>>,
        S::Error: std::fmt::Debug,
    {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_burst_wait_for_tokens() {
        let requests = Arc::new(AtomicU64::new(0));
        let mut service = ThrottleLayer::new(2.0, 2)
            .counting(Arc::clone(&requests))
            .layer(answering(200, None));
        let start = Instant::now();
        for _ in 0..4 {
            send(&mut service).await;
        }
        // Two from the burst, two more at 2 per second.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(requests.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_holds_every_request_for_its_retry_after_and_sends_again() {
        let requests = Arc::new(AtomicU64::new(0));
        let answers = Arc::new(Mutex::new(vec![200, 429]));
        let inner = {
            let answers = Arc::clone(&answers);
            tower::service_fn(move |_request: Request<()>| {
                let status = lock(&answers).pop().unwrap_or(200);
                let mut response = Response::builder().status(status);
                if status == 429 {
                    response = response.header(http::header::RETRY_AFTER, "3");
                }
                std::future::ready(Ok::<_, Infallible>(response.body(()).unwrap()))
            })
        };
        let mut service = ThrottleLayer::new(0.0, 1)
            .counting(Arc::clone(&requests))
            .layer(inner);
        let start = Instant::now();
        let response = send(&mut service).await;
        assert_eq!(response.status(), StatusCode::OK, "sent again after the hold");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(
            requests.load(Ordering::Relaxed),
            2,
            "both attempts are counted as sent"
        );
        send(&mut service).await;
        assert_eq!(requests.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answered_429_every_time_is_given_up_after_its_attempts() {
        let requests = Arc::new(AtomicU64::new(0));
        let mut service = ThrottleLayer::new(0.0, 1)
            .counting(Arc::clone(&requests))
            .layer(answering(429, None));
        let start = Instant::now();
        let response = send(&mut service).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(requests.load(Ordering::Relaxed), u64::from(THROTTLED_ATTEMPTS));
        // Holds of 1, 2, 4 and 8 s between the five attempts.
        assert_eq!(start.elapsed(), Duration::from_secs(15));
    }
}
