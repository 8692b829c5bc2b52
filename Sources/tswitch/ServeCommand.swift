import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Serving
import Synchronization

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract:
            "Serve every task of a folder of packs over HTTP from one resident base (embeddings, classification).",
        discussion: """
            Loads BASE and every *.tsw of --packs (each checked: checksums, base fingerprint, a trial switch), the \
            router for "auto" (--router: an LDA router file .tsr or a k-NN query set; default the best measured \
            one in --packs: router-layers.tsr, else router.tsr, else queries.safetensors), runs a warm-up batch, then \
            prints 'ready on http://HOST:PORT'. Endpoints: POST /v1/embeddings (OpenAI's shape; model = a task, \
            "base" or "auto"), POST /v1/classify, GET /v1/models, /health, /ready, /metrics (Prometheus), and with \
            the admin token PUT/DELETE /v1/packs/{task}. SIGTERM or SIGINT: stop accepting, answer what is in \
            flight, exit 0.
            """)

    @Argument(help: "The base model folder the packs were made from.")
    var base: String

    @Option(help: "Folder of switch packs (*.tsw) to serve.")
    var packs: String

    @Option(
        help:
            "Router for \"auto\": an LDA router file (.tsr, `tswitch route --build`) or a labelled k-NN query set (.safetensors). Default, in --packs when present: router-layers.tsr (the best measured per example), else router.tsr, else queries.safetensors."
    )
    var router: String?

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port, printed when ready).")
    var port = 8080

    @Option(help: "Token budget of one batch.")
    var maxBatchTokens = ServerConfiguration().maxBatchTokens

    @Option(help: "Longest wait, in milliseconds, for a batch to fill.")
    var maxWaitMs = ServerConfiguration().maxWaitMilliseconds

    @Option(help: "Largest request body in bytes (413 above it).")
    var maxBody = ServerConfiguration().maxBodyBytes

    @Option(help: "Largest pack upload in bytes.")
    var maxPackBytes = ServerConfiguration().maxPackBytes

    @Option(help: "Most texts per request.")
    var maxInputs = ServerConfiguration().maxInputs

    @Option(help: "Most texts queued or running (429 above it).")
    var maxQueue = ServerConfiguration().maxQueuedTexts

    @Option(help: "Token limit per text, [CLS] and [SEP] included.")
    var maxLength = ServerConfiguration().maxLength

    @Option(help: "Texts per forward pass.")
    var batch = ServerConfiguration().forwardBatch

    @Option(help: "Auto-Switch: neighbours of the k-NN router (a query set; an LDA router has none).")
    var routeK = ServerConfiguration().routeK

    @Flag(help: "Cut texts over --max-length instead of refusing them (the response marks them truncated).")
    var truncate = false

    @Option(help: "Bearer token for PUT/DELETE /v1/packs/{task} (or TSWITCH_ADMIN_TOKEN); without it they are off.")
    var adminToken: String?

    func run() throws {
        var config = ServerConfiguration()
        config.maxBatchTokens = maxBatchTokens
        config.maxWaitMilliseconds = maxWaitMs
        config.maxBodyBytes = maxBody
        config.maxPackBytes = maxPackBytes
        config.maxInputs = maxInputs
        config.maxQueuedTexts = maxQueue
        config.maxLength = maxLength
        config.forwardBatch = batch
        config.routeK = routeK
        config.truncate = truncate
        config.adminToken = adminToken ?? ProcessInfo.processInfo.environment["TSWITCH_ADMIN_TOKEN"]
        let routerPath =
            router
            ?? ["router-layers.tsr", "router.tsr", "queries.safetensors"].map {
                URL(fileURLWithPath: packs).appendingPathComponent($0).path
            }
            .first { FileManager.default.fileExists(atPath: $0) }
        let settings = config

        // The root command is synchronous; the server runs in a task while this thread waits for it.
        let outcome = Mutex<(any Error)?>(nil)
        let done = DispatchSemaphore(value: 0)
        let command = self
        Task {
            do {
                try await command.serve(config: settings, routerPath: routerPath)
            } catch {
                outcome.withLock { $0 = error }
            }
            done.signal()
        }
        done.wait()
        if let error = outcome.withLock({ $0 }) { throw error }
    }

    private func serve(config: ServerConfiguration, routerPath: String?) async throws {
        var logger = Logger(label: "tswitch-serve")
        logger.logLevel =
            ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .notice
        let server = try await ServingServer.load(
            base: base, packsDirectory: packs, routerPath: routerPath, config: config)
        let tasks = await server.queue.loaded().keys.sorted()
        let host = self.host
        let app = server.application(host: host, port: port, logger: logger) { bound in
            let auto = routerPath.map { "; auto via \($0)" } ?? ""
            let line =
                "ready on http://\(host):\(bound ?? 0) (\(tasks.count) packs: \(tasks.joined(separator: ", "))\(auto))\n"
            FileHandle.standardOutput.write(Data(line.utf8))  // unbuffered: scripts wait for this line
        }
        let group = ServiceGroup(
            configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
