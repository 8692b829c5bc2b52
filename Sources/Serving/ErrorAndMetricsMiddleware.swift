import Foundation
import Hummingbird
import Logging

/// Turns every error into OpenAI's JSON error (the router's own 404/405 included) and counts each request by
/// endpoint and status.
struct ErrorAndMetricsMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let metrics: ServingMetrics

    static let endpoints: Set<String> = [
        "/health", "/ready", "/metrics", "/v1/models", "/v1/embeddings", "/v1/classify",
    ]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let path = request.uri.path
        let endpoint =
            Self.endpoints.contains(path) ? path : path.hasPrefix("/v1/packs/") ? "/v1/packs/{task}" : "other"
        let response: Response
        do {
            response = try await next(request, context)
        } catch let e as ServingError {
            response = e.response()
        } catch let e as any HTTPResponseError {
            switch e.status {
            case .notFound:
                response = ServingError(
                    .notFound, status: .notFound,
                    "No route \(request.method) \(path); the API has POST /v1/embeddings, POST /v1/classify, GET /v1/models, GET /health, GET /ready, GET /metrics, PUT and DELETE /v1/packs/{task}."
                ).response()
            case .methodNotAllowed:
                response = ServingError(
                    .methodNotAllowed, status: .methodNotAllowed, "\(path) does not take \(request.method)."
                ).response()
            case .contentTooLarge:
                response = ServingError(
                    .bodyTooLarge, status: .contentTooLarge, "The body is larger than this server accepts."
                ).response()
            default:
                response = ServingError(
                    e.status.code >= 500 ? .internalError : .invalidInput, status: e.status,
                    "\(request.method) \(path): \(e.status.reasonPhrase)."
                ).response()
            }
        } catch {
            response = ServingError(
                .internalError, status: .internalServerError, "\(request.method) \(path) failed: \(error)."
            ).response()
        }
        metrics.request(endpoint: endpoint, status: response.status.code)
        return response
    }
}
