import Foundation
import Hummingbird

/// An error answered to a client: an HTTP status and OpenAI's error shape,
/// `{"error": {"message", "type", "code"}}`.
///
/// `code` is stable (clients and tests match on it); `message` is a full sentence saying what was wrong and what
/// to do instead.
public struct ServingError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable {
        /// The body is not JSON, or a field has the wrong type or is missing.
        case invalidJSON = "invalid_json"
        /// A field has a value outside what the server accepts (empty input, too many inputs, unknown option).
        case invalidInput = "invalid_input"
        /// A text has more tokens than the limit and the server does not truncate.
        case textTooLong = "text_too_long"
        /// The body is larger than the server accepts.
        case bodyTooLarge = "body_too_large"
        /// The named task (model) is not loaded.
        case modelNotFound = "model_not_found"
        /// The task has no classification head.
        case noHead = "no_head"
        /// Routing (`auto`) was asked for, but the server has no router.
        case noRouter = "no_router"
        /// The inference queue is full; retry after `Retry-After` seconds.
        case queueFull = "queue_full"
        /// A pack upload was refused (checksum, other base, newer format, wrong task); nothing changed.
        case packRefused = "pack_refused"
        /// The admin token is missing or wrong.
        case unauthorized = "unauthorized"
        /// Pack management is off (no admin token configured).
        case adminDisabled = "admin_disabled"
        /// No such route, or a method the route does not take.
        case notFound = "not_found"
        case methodNotAllowed = "method_not_allowed"
        /// The server is not ready yet, or is shutting down.
        case unavailable = "unavailable"
        /// A failure inside the server (a bug or a broken model): the message says what.
        case internalError = "internal_error"
    }

    public let code: Code
    public let status: HTTPResponse.Status
    public let message: String
    /// Seconds a client should wait before retrying (429).
    public let retryAfter: Int?

    public init(_ code: Code, status: HTTPResponse.Status, _ message: String, retryAfter: Int? = nil) {
        self.code = code
        self.status = status
        self.message = message
        self.retryAfter = retryAfter
    }

    /// OpenAI's `type`: the broad class of the error.
    public var type: String {
        switch status.code {
        case 401, 403: "authentication_error"
        case 404: "not_found_error"
        case 413: "request_too_large"
        case 429: "rate_limit_error"
        case 500...: "server_error"
        default: "invalid_request_error"
        }
    }

    public var description: String { message }

    /// The JSON body and headers of the error response.
    public func response() -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[.retryAfter] = "\(retryAfter)" }
        let body: [String: [String: String]] = ["error": ["message": message, "type": type, "code": code.rawValue]]
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func badRequest(_ code: Code, _ message: String) -> ServingError {
        ServingError(code, status: .badRequest, message)
    }

    static func badRequest(_ message: String) -> ServingError { badRequest(.invalidInput, message) }
}
