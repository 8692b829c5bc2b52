import Foundation
import TaskSwitches

/// Small limits so one input decodes in milliseconds (a legal 65,536-dimensional router is 17 GB of Cholesky factor).
let fuzzRouterLimits = RouterFile.Limits(maxTasks: 64, maxDimension: 256, maxMetaBytes: 1 << 16)

/// A `.tsr` LDA router file, decoded as is and with every section's CRC-32C recomputed (the sections are framed as in
/// packs), so mutations reach the META and matrix decoders behind the checksums. An accepted router must have
/// consistent sizes, route a feature row without trapping, and survive encode/decode unchanged.
func fuzzRouter(_ bytes: UnsafeRawBufferPointer) {
    checkRouter(bytes)
    var repaired = [UInt8](bytes)
    if repairChecksums(&repaired) { repaired.withUnsafeBytes { checkRouter($0) } }
}

private func checkRouter(_ bytes: UnsafeRawBufferPointer) {
    guard let r = try? RouterFile.decode(bytes, file: "fuzz.tsr", limits: fuzzRouterLimits) else { return }
    let d = r.dimension
    precondition(!r.tasks.isEmpty && d > 0, "accepted a router without tasks or features")
    precondition(r.centre.count == d && r.bias.count == r.tasks.count, "accepted inconsistent sizes")
    precondition(
        r.weights.count == r.tasks.count * d && r.choleskyFactor.count == d * d, "accepted a wrong matrix size")
    if let x = r.lexical {
        precondition(x.tables.count == r.tasks.count, "accepted a lexical model without one table per task")
        // Lexical evidence must score any text without trapping (huge weights give ±∞, never a crash).
        _ = x.evidence("fuzz \u{1F600} é")
    }
    let again = RouterFile.encode(r)
    guard let back = try? RouterFile.decode(again, file: "fuzz-again.tsr") else {
        preconditionFailure("a decoded router does not decode after re-encoding")
    }
    precondition(RouterFile.encode(back) == again, "a decoded router changed after re-encoding")
}
