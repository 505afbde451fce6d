//! Client-side throttling of Kubernetes API requests: a token bucket
//! (`qps` tokens per second, at most `burst` saved up) in the client's
//! service stack, which also holds every request back for as long as the
//! API server asked with a `429 Too Many Requests` answer's `Retry-After`.
//! It can also count the requests, for the metrics.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};
use tracing::warn;

use crate::pv_cache::lock;

/// How long to hold requests back after a 429 without `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest hold honoured, so a bogus header cannot stall the controller.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Throttle settings: `qps` requests per second on average, bursts of up to
/// `burst`. A `qps` of zero or less, or one that is not a finite number,
/// turns throttling off (429 answers are still honoured). A tiny `qps`
/// holds a request back for at most [`MAX_HOLD`].
#[derive(Clone, Debug)]
pub struct ThrottleLayer {
    qps: f64,
    burst: u32,
    requests: Option<Counter>,
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

    /// Also counts every request sent in `requests`.
    pub fn counting(mut self, requests: Counter) -> Self {
        self.requests = Some(requests);
        self
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle {
            inner,
            bucket: Bucket::new(self.qps, self.burst),
            holding: None,
            ready: false,
            blocked: BlockedUntil::default(),
            requests: self.requests.clone(),
        }
    }
}

/// Time before which no request may go out, shared with response futures.
#[derive(Clone, Debug, Default)]
struct BlockedUntil(std::sync::Arc<std::sync::Mutex<Option<Instant>>>);

impl BlockedUntil {
    fn get(&self) -> Option<Instant> {
        *lock(&self.0)
    }

    fn extend(&self, until: Instant) {
        let mut blocked = lock(&self.0);
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

/// The throttling service; see [`ThrottleLayer`].
#[derive(Debug)]
pub struct Throttle<S> {
    inner: S,
    bucket: Bucket,
    holding: Option<Pin<Box<Sleep>>>,
    /// A token was taken for the next call.
    ready: bool,
    blocked: BlockedUntil,
    requests: Option<Counter>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Throttle<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.ready {
            if let Some(holding) = self.holding.as_mut() {
                ready!(holding.as_mut().poll(cx));
                self.holding = None;
            }
            let now = Instant::now();
            if let Some(until) = self.blocked.get().filter(|until| *until > now) {
                self.holding = Some(Box::pin(tokio::time::sleep_until(until)));
                continue;
            }
            match self.bucket.take(now) {
                Ok(()) => self.ready = true,
                Err(wait) => self.holding = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.ready = false;
        if let Some(requests) = &self.requests {
            requests.inc();
        }
        let blocked = self.blocked.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(&response).min(MAX_RETRY_AFTER);
                warn!(
                    seconds = wait.as_secs_f64(),
                    "API server answered 429: holding requests back"
                );
                blocked.extend(Instant::now() + wait);
            }
            Ok(response)
        })
    }
}

fn retry_after<B>(response: &Response<B>) -> Duration {
    response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

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
        let requests = Counter::default();
        let mut service = ThrottleLayer::new(2.0, 2)
            .counting(requests.clone())
            .layer(answering(200, None));
        let start = Instant::now();
        for _ in 0..4 {
            send(&mut service).await;
        }
        // Two from the burst, two more at 2 per second.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(requests.get(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_holds_the_next_requests_for_its_retry_after() {
        let mut service = ThrottleLayer::new(0.0, 1).layer(answering(429, Some("3")));
        let start = Instant::now();
        let response = send(&mut service).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        send(&mut service).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
