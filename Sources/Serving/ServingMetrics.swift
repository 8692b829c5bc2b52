import Metrics
import Prometheus

/// The server's metrics, through swift-metrics handlers made by one Prometheus factory (not bootstrapped
/// globally, so several servers, e.g. in tests, keep separate registries). `GET /metrics` renders `registry`.
public struct ServingMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        let sizes: [Double] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]
        factory.valueHistogramBuckets = [
            "tswitch_batch_texts": sizes, "tswitch_batch_groups": [1, 2, 3, 4, 6, 8, 12, 16, 32],
        ]
        let seconds: [Duration] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
            .seconds(10), .seconds(30),
        ]
        factory.defaultDurationHistogramBuckets = seconds
        self.factory = factory
    }

    /// One answered HTTP request; statuses of 400 and above also count as failures.
    func request(endpoint: String, status: Int) {
        let dims = [("endpoint", endpoint), ("status", "\(status)")]
        Counter(label: "tswitch_http_requests_total", dimensions: dims, factory: factory).increment()
        if status >= 400 {
            Counter(label: "tswitch_http_failures_total", dimensions: dims, factory: factory).increment()
        }
    }

    /// Texts answered per task (the switch applied: a task, or `base`).
    func texts(task: String, count: Int) {
        Counter(label: "tswitch_task_texts_total", dimensions: [("task", task)], factory: factory).increment(by: count)
    }

    /// One request per distinct task it was answered with.
    func taskRequest(task: String) {
        Counter(label: "tswitch_task_requests_total", dimensions: [("task", task)], factory: factory).increment()
    }

    /// One batch: its texts, its switch groups and the time of its forward passes and switches.
    func batch(texts: Int, groups: Int, duration: Duration) {
        Recorder(label: "tswitch_batch_texts", factory: factory).record(texts)
        Recorder(label: "tswitch_batch_groups", factory: factory).record(groups)
        Timer(label: "tswitch_inference_seconds", factory: factory).recordInterval(duration)
    }

    /// Time a request waited in the queue before its batch started.
    func queueWait(_ duration: Duration) {
        Timer(label: "tswitch_queue_wait_seconds", factory: factory).recordInterval(duration)
    }

    /// Texts admitted and not yet answered (queued or in the running batch).
    func queuedTexts(_ n: Int) {
        Gauge(label: "tswitch_queued_texts", factory: factory).record(n)
    }

    func loadedPacks(_ n: Int) {
        Gauge(label: "tswitch_loaded_packs", factory: factory).record(n)
    }

    /// Prometheus text format.
    public func render() -> String { registry.emitToString() }
}

extension Timer {
    fileprivate func recordInterval(_ d: Duration) {
        let (s, atto) = d.components
        recordNanoseconds(s * 1_000_000_000 + atto / 1_000_000_000)
    }
}
