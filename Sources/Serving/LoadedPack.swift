import Evaluation
import Foundation
import TaskSwitches

/// A pack the server holds: validated against the resident base, with its classification head ready.
///
/// Values are immutable: replacing a task's pack makes a new `LoadedPack` (a new `generation`), and requests
/// already queued keep the one they were admitted with.
public struct LoadedPack: Sendable {
    public let pack: SwitchPack
    /// The task's head (`weight`, `bias` from the pack), nil when the pack carries none.
    public let head: LinearHead?
    /// Where it came from: a file path or "upload".
    public let source: String
    /// Distinguishes two packs of the same task (batches group by it, never by the name alone).
    public let generation: Int
    public var task: String { pack.task }

    /// Checks what can be checked without touching weights: the base fingerprint and the head's shapes
    /// (the pack's checksums were checked when it was decoded).
    init(pack: SwitchPack, source: String, generation: Int, fingerprint: BaseFingerprint, hidden: Int)
        throws(ServingError)
    {
        guard pack.baseFingerprint == fingerprint else {
            throw ServingError(
                .packRefused, status: .badRequest,
                "\(source): the pack for '\(pack.task)' was made from another base (fingerprint \(pack.baseFingerprint)); the server's base is \(fingerprint)."
            )
        }
        let name = pack.task
        guard !name.isEmpty, name != "base", name != "auto",
            name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) })
        else {
            throw ServingError(
                .packRefused, status: .badRequest,
                "\(source): the task name '\(name)' is not usable: names are letters, digits, '-', '_' and '.', and 'base' and 'auto' are reserved."
            )
        }
        self.pack = pack
        self.source = source
        self.generation = generation
        do { head = try LinearHead.of(pack: pack, hidden: hidden) } catch {
            throw ServingError(.packRefused, status: .badRequest, "\(source): \(error.message)")
        }
    }
}
