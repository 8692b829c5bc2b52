import CheckpointIO
import Dispatch

/// Runs the writes of a merge on a thread of their own, one at a time and in submission order, so tensor i is copied
/// into the page cache (and, with early write-back, on its way to disk) while tensor i+1 is being computed.
///
/// At most one write is in flight: `submit` first waits for the previous one. A caller alternating two output
/// buffers can therefore refill the buffer of write i−1 as soon as `submit(i)` returns. The first failure is kept
/// and rethrown by the next `submit` or by `drain`; later jobs are skipped.
final class OutputPipeline: @unchecked Sendable {
    typealias Job = @Sendable () throws(CheckpointError) -> Void

    // `pending` and `failure` are handed between the submitting thread and the queue's job: `submit` sets `pending`
    // before `queue.async`, and reads either only after `slot.wait()`, which orders them with the job's writes.
    private let queue = DispatchQueue(label: "taskswitch.merge.output")
    private let slot = DispatchSemaphore(value: 1)
    private var pending: Job?
    private var failure: CheckpointError?

    /// Waits for the previous write, then starts `job` in the background.
    func submit(_ job: @escaping Job) throws(CheckpointError) {
        slot.wait()
        if let failure {
            slot.signal()
            throw failure
        }
        pending = job
        queue.async { [self] in
            runPending()
            slot.signal()
        }
    }

    /// Runs and drops the pending job before the slot is signalled: once `drain` returns, nothing here still holds
    /// what the job captured (the model writer, whose deinit removes an unfinished output's temporary folder).
    private func runPending() {
        guard let job = pending else { return }
        pending = nil
        do throws(CheckpointError) { try job() } catch { failure = error }
    }

    /// Waits until every submitted write has finished; rethrows the first failure.
    func drain() throws(CheckpointError) {
        slot.wait()
        slot.signal()
        if let failure { throw failure }
    }
}
