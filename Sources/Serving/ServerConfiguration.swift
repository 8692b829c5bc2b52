/// Limits and switches of `tswitch serve`; every limit is enforced per request before any work is queued.
public struct ServerConfiguration: Sendable {
    /// Token budget of one batch: queued requests are taken, oldest first, while their tokens fit.
    public var maxBatchTokens = 8192
    /// Longest time the oldest queued request waits for others to join its batch.
    public var maxWaitMilliseconds = 5
    /// Largest request body, in bytes (413 above it); pack uploads have `maxPackBytes`.
    public var maxBodyBytes = 1 << 20
    /// Largest pack upload, in bytes.
    public var maxPackBytes = 64 << 20
    /// Most texts in one request.
    public var maxInputs = 256
    /// Most texts admitted and not yet answered (queued or in the running batch); 429 above it.
    public var maxQueuedTexts = 4096
    /// Token limit per text, `[CLS]` and `[SEP]` included.
    public var maxLength = 128
    /// Cut texts over `maxLength` instead of refusing them.
    public var truncate = false
    /// Texts per forward pass inside a batch.
    public var forwardBatch = 64
    /// Bearer token for `PUT`/`DELETE /v1/packs/{task}`; nil turns pack management off.
    public var adminToken: String?
    /// Auto-Switch: neighbours of the k-NN router.
    public var routeK = 10

    public init() {}

    /// Checks the limits against each other and the model's position limit.
    public func validate(maxPositions: Int) throws(ServingError) {
        func fail(_ m: String) -> ServingError { ServingError(.invalidInput, status: .badRequest, m) }
        guard maxLength >= 2 else { throw fail("--max-length must be at least 2 ([CLS] and [SEP]); got \(maxLength).") }
        guard maxLength <= maxPositions else {
            throw fail("--max-length \(maxLength) exceeds the model's max_position_embeddings \(maxPositions).")
        }
        guard maxBatchTokens >= maxLength else {
            throw fail(
                "--max-batch-tokens \(maxBatchTokens) must hold at least one text of --max-length \(maxLength) tokens.")
        }
        guard maxWaitMilliseconds >= 0 else {
            throw fail("--max-wait-ms must not be negative; got \(maxWaitMilliseconds).")
        }
        guard maxBodyBytes >= 64 else { throw fail("--max-body must be at least 64 bytes; got \(maxBodyBytes).") }
        guard maxInputs >= 1 else { throw fail("--max-inputs must be at least 1; got \(maxInputs).") }
        guard maxQueuedTexts >= maxInputs else {
            throw fail(
                "--max-queue \(maxQueuedTexts) must be at least --max-inputs \(maxInputs), or a full request could never be admitted."
            )
        }
        guard forwardBatch >= 1, routeK >= 1 else { throw fail("--batch and --route-k must be at least 1.") }
        if let adminToken, adminToken.isEmpty { throw fail("The admin token must not be empty.") }
    }
}
