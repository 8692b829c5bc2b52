import CheckpointIO
import Foundation

/// Labelled feature vectors: Auto-Switch's query set (100 training examples per task, features from the base
/// model), or features to route with optional task labels.
///
/// Stored as a small safetensors file: `features` (F32, F16 or BF16, [N, D]; `embeddings`, as `tswitch embed`
/// writes, is read too), optional `labels` (I64 or I32, [N], index into the task list) and `__metadata__` key
/// `tasks` holding a JSON array of task names.
public struct QuerySet: Sendable {
    public let features: [Float]
    public let count: Int
    public let dimension: Int
    /// Task index per row, when labelled.
    public let labels: [Int]?
    public let tasks: [String]
    /// The base layers the rows were pooled from, as a router reads them (metadata `layers`, which `tswitch embed
    /// --layers` writes); nil when the file does not say (sentence embeddings, or older files).
    public var layers: [Int]?

    public init(features: [Float], count: Int, dimension: Int, labels: [Int]?, tasks: [String]) {
        precondition(features.count == count * dimension, "features do not match count × dimension")
        self.features = features
        self.count = count
        self.dimension = dimension
        self.labels = labels
        self.tasks = tasks
    }

    public func row(_ i: Int) -> ArraySlice<Float> { features[(i * dimension)..<((i + 1) * dimension)] }

    /// Reads and validates a features file.
    ///
    /// - Parameter requireLabels: a query set needs labels and task names; features to route do not.
    public init(path: String, requireLabels: Bool) throws(SwitchError) {
        let file = try io { () throws(CheckpointError) in try SafeTensorsFile(path: path) }
        let tensorName = file.info("features") != nil ? "features" : "embeddings"
        guard let info = file.info(tensorName) else {
            throw SwitchError(
                .invalidFeatures,
                "\(path): expected a tensor named 'features' (or 'embeddings') of shape [examples, dimension].")
        }
        guard info.shape.count == 2, info.shape[0] > 0, info.shape[1] > 0, info.dtype.isConvertibleFloat else {
            throw SwitchError(
                .invalidFeatures,
                "\(path): 'features' is \(info.dtype.rawValue) \(info.shape); expected a float matrix [examples, dimension]."
            )
        }
        let values = try io { () throws(CheckpointError) in try file.tensor(tensorName).floats() }
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw SwitchError(
                .invalidFeatures, "\(path): 'features' holds NaN or infinity at row \(bad / info.shape[1]).")
        }
        var tasks: [String] = []
        if let t = file.metadata["tasks"] {
            guard let a = try? JSONSerialization.jsonObject(with: Data(t.utf8)) as? [String] else {
                throw SwitchError(.invalidFeatures, "\(path): metadata 'tasks' must be a JSON array of task names.")
            }
            tasks = a
        }
        var pooled: [Int]?
        if let text = file.metadata["layers"] {
            let parsed = try? LDARouter.layers(parsing: text)
            guard let parsed, !parsed.isEmpty, info.shape[1] % parsed.count == 0 else {
                throw SwitchError(
                    .invalidFeatures,
                    "\(path): metadata 'layers' is '\(text)'; expected ascending base layers like 3,4,5,6 whose count divides the dimension \(info.shape[1])."
                )
            }
            pooled = parsed
        }
        var labels: [Int]?
        if let l = file.info("labels") {
            guard l.shape == [info.shape[0]], l.dtype == .I64 || l.dtype == .I32 else {
                throw SwitchError(
                    .invalidFeatures,
                    "\(path): 'labels' is \(l.dtype.rawValue) \(l.shape); expected I64 or I32 of shape [\(info.shape[0])]."
                )
            }
            let view = try io { () throws(CheckpointError) in try file.tensor("labels") }
            let b = view.bytes
            let w = l.dtype == .I64 ? 8 : 4
            labels = (0..<info.shape[0]).map { i in
                w == 8
                    ? Int(Int64(littleEndian: b.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)))
                    : Int(Int32(littleEndian: b.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)))
            }
            if let bad = labels?.first(where: { $0 < 0 || $0 >= tasks.count }) {
                throw SwitchError(
                    .invalidFeatures,
                    "\(path): label \(bad) is outside the \(tasks.count) task names in metadata 'tasks'.")
            }
        }
        if requireLabels && (labels == nil || tasks.isEmpty) {
            throw SwitchError(
                .invalidQuerySet,
                "\(path): a query set needs 'labels' (I64 [N]) and metadata 'tasks' (JSON array of names).")
        }
        self.init(features: values, count: info.shape[0], dimension: info.shape[1], labels: labels, tasks: tasks)
        layers = pooled
    }

    /// Stacks unlabelled feature sets, one per task, into a labelled query set (task i = `parts[i]`).
    public static func combine(_ parts: [(task: String, features: QuerySet)]) throws(SwitchError) -> QuerySet {
        guard let d = parts.first?.features.dimension else {
            throw SwitchError(.invalidArgument, "No feature files were given; expected TASK=FILE pairs.")
        }
        var values: [Float] = []
        var labels: [Int] = []
        for (i, p) in parts.enumerated() {
            guard p.features.dimension == d else {
                throw SwitchError(
                    .invalidFeatures,
                    "The features of task '\(p.task)' have dimension \(p.features.dimension); the first task's have \(d)."
                )
            }
            values += p.features.features
            labels += Array(repeating: i, count: p.features.count)
        }
        return QuerySet(features: values, count: labels.count, dimension: d, labels: labels, tasks: parts.map(\.task))
    }

    /// Writes the set as safetensors (atomic).
    public func write(to path: String) throws(SwitchError) {
        var specs = [TensorSpec(name: "features", dtype: .F32, shape: [count, dimension])]
        if labels != nil { specs.append(TensorSpec(name: "labels", dtype: .I64, shape: [count])) }
        let tasksJSON =
            (try? JSONSerialization.data(withJSONObject: tasks)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        try io { () throws(CheckpointError) in
            let w = try SafeTensorsWriter(path: path, tensors: specs, metadata: ["tasks": tasksJSON])
            try w.write("features", floats: features)
            if let labels {
                let raw = labels.flatMap { withUnsafeBytes(of: Int64($0).littleEndian, Array.init) }
                var failure: CheckpointError?
                raw.withUnsafeBytes { b in
                    do throws(CheckpointError) { try w.write("labels", bytes: b) } catch { failure = error }
                }
                if let failure { throw failure }
            }
            try w.finish()
        }
    }
}
