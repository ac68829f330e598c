import LinuxSystem

/// READ, WRITE and TRIM for runs of pages: cut by group and by `WireLimits.pagesPerRequestMax`,
/// sent to the group's replicas, all in flight before the first wait.
///
/// - A WRITE or TRIM goes to every healthy replica (and to a replica being filled) and
///   succeeds once every one of them acknowledged; a replica whose server fails (connection
///   error, timeout) is marked down and the request succeeds on the others. No replica left,
///   or a refusal (FULL, FENCED, …), is an error.
/// - A READ goes to the first healthy replica; if its server fails, to the next, at once.
extension RemoteVolume {
    /// One request in flight for a batch.
    struct InFlight {
        var connection: Int
        var ticket: RequestTicket
        var piece: Int
    }

    /// One group-and-size-bounded piece of a call, and what became of it.
    struct Piece {
        var header: FrameHeader
        var group: Int
        var pages: UnsafeBufferPointer<UnsafeMutableRawPointer>?
        /// Replicas that acknowledged (WRITE/TRIM) or 1 once a READ succeeded.
        var acknowledged: Int
        /// Replicas asked (a READ: the next replica to try).
        var attempts: Int
        var error: RemoteMemError?
    }

    /// The group of `page`, and how many of the `remaining` pages from it one request carries:
    /// requests stop at a group's end and at `WireLimits.pagesPerRequestMax`.
    @inline(__always)
    static func piece(at page: UInt64, remaining: Int) -> (group: Int, pages: Int) {
        let group = page / ClientLimits.groupPages
        let toGroupEnd = (group + 1) * ClientLimits.groupPages - page
        return (Int(group), Int(min(UInt64(remaining), toGroupEnd, UInt64(WireLimits.pagesPerRequestMax))))
    }

    public func readPages(_ runs: UnsafeBufferPointer<PageRun>) throws(RemoteMemError) {
        try transfer(.read, runs)
    }

    public func writePages(_ runs: UnsafeBufferPointer<PageRun>) throws(RemoteMemError) {
        copyLock.lockShared()
        defer { copyLock.unlock() }
        try transfer(.write, runs)
    }

    public func trimPages(from firstPage: UInt64, count: UInt64) throws(RemoteMemError) {
        precondition(firstPage <= pageCount && count <= pageCount - firstPage, "trim past the volume")
        copyLock.lockShared()
        defer { copyLock.unlock() }
        var page = firstPage
        let end = firstPage + count
        // A trim covers at most one group per piece; a whole volume is a few thousand groups,
        // so pieces go out in calls of `requestsPerCallMax / 4`.
        let perCall = ClientLimits.requestsPerCallMax / 4
        try withUnsafeTemporaryAllocation(of: Piece.self, capacity: perCall) { (pieces) throws(RemoteMemError) in
            while page < end {
                var count = 0
                while page < end && count < perCall {
                    let group = Int(page / ClientLimits.groupPages)
                    let n = min(end, UInt64(group + 1) * ClientLimits.groupPages) - page
                    (pieces.baseAddress! + count).initialize(to: Piece(
                        header: FrameHeader(opcode: .trim, requestID: 0, pageCount: UInt32(n), epoch: epoch, page: page),
                        group: group, pages: nil, acknowledged: 0, attempts: 0, error: nil))
                    count += 1
                    page += n
                }
                defer { pieces.baseAddress!.deinitialize(count: count) }
                try send(UnsafeMutableBufferPointer(rebasing: pieces[..<count]), opcode: .trim)
            }
        }
    }

    /// Cuts `runs` into pieces and sends them. Never returns while a request may still write
    /// into a run's pages.
    private func transfer(_ opcode: Opcode, _ runs: UnsafeBufferPointer<PageRun>) throws(RemoteMemError) {
        let pagesMax = UInt64(WireLimits.pagesPerRequestMax)
        var total = 0
        for run in runs {
            precondition(run.firstPage <= pageCount && UInt64(run.pageCount) <= pageCount - run.firstPage, "run past the volume")
            total += (run.pageCount + Int(pagesMax) - 1) / Int(pagesMax) + 1
        }
        try withUnsafeTemporaryAllocation(of: Piece.self, capacity: max(total, 1)) { (pieces) throws(RemoteMemError) in
            var count = 0
            for run in runs {
                var offset = 0
                while offset < run.pageCount {
                    let page = run.firstPage + UInt64(offset)
                    let (group, n) = Self.piece(at: page, remaining: run.pageCount - offset)
                    (pieces.baseAddress! + count).initialize(to: Piece(
                        header: FrameHeader(opcode: opcode, requestID: 0, pageCount: UInt32(n), epoch: epoch, page: page),
                        group: group, pages: UnsafeBufferPointer(start: run.pages + offset, count: n),
                        acknowledged: 0, attempts: 0, error: nil))
                    count += 1
                    offset += n
                }
            }
            // SAFETY: the first `count` pieces were initialized above.
            defer { pieces.baseAddress!.deinitialize(count: count) }
            try send(UnsafeMutableBufferPointer(rebasing: pieces[..<count]), opcode: opcode)
        }
    }

    /// Sends every piece to its replicas and waits; retries READs on the next replica when a
    /// server fails. Throws the first error that leaves a piece undone (FENCED first).
    private func send(_ pieces: UnsafeMutableBufferPointer<Piece>, opcode: Opcode) throws(RemoteMemError) {
        let isRead = opcode == .read
        var round = 0
        while true {
            var firstError: RemoteMemError?
            withUnsafeTemporaryAllocation(of: InFlight.self, capacity: ClientLimits.requestsPerCallMax) { inFlight in
                var submitted = 0
                for index in pieces.indices where pieces[index].acknowledged == 0 && pieces[index].error == nil {
                    guard submitPiece(index, pieces, isRead: isRead, round: round, into: inFlight, &submitted, &firstError) else { break }
                }
                drain(inFlight, submitted, pieces, &firstError)
            }
            if let firstError { throw firstError }
            // WRITE/TRIM: done (every healthy replica was asked in one round). READ: a piece
            // whose replica failed is asked again of the next one.
            if !isRead || !pieces.contains(where: { $0.acknowledged == 0 && $0.error == nil }) { break }
            round += 1
        }
        for piece in pieces where piece.acknowledged == 0 {
            if let error = piece.error { throw error }
        }
    }

    /// Submits piece `index` to its replicas (a READ: to its next healthy replica). READ of a
    /// never-placed group: zero-fills, no request; TRIM of one: nothing. Drains the batch first
    /// when it is full or a placement must publish. Returns false if the batch must stop.
    private func submitPiece(_ index: Int, _ pieces: UnsafeMutableBufferPointer<Piece>, isRead: Bool, round: Int,
                             into inFlight: UnsafeMutableBufferPointer<InFlight>, _ submitted: inout Int,
                             _ firstError: inout RemoteMemError?) -> Bool {
        let header = pieces[index].header
        let group = pieces[index].group
        let replicaSet: ReplicaSet
        do {
            var found = try replicas(ofGroup: group, placing: false, forWriting: !isRead)
            if found == nil && header.opcode == Opcode.write.rawValue {
                // Placing a group publishes the table on every server (METADATA_PUT): redeem
                // our own tickets first so they do not hold the window slots it needs.
                drain(inFlight, submitted, pieces, &firstError)
                submitted = 0
                if firstError != nil { return false }
                found = try replicas(ofGroup: group, placing: true, forWriting: true)
            }
            guard let found else {
                if isRead, let pages = pieces[index].pages {
                    // SAFETY: each destination is a 4 KiB page buffer the caller provided.
                    for page in pages { page.initializeMemory(as: UInt8.self, repeating: 0, count: WireLimits.pageSize) }
                }
                pieces[index].acknowledged = 1
                return true
            }
            replicaSet = found
        } catch {
            pieces[index].error = error
            firstError = firstError ?? error
            return false
        }
        let targets = isRead ? 1 : replicaSet.count
        for t in 0..<targets {
            if submitted == inFlight.count {
                drain(inFlight, submitted, pieces, &firstError)
                submitted = 0
                if firstError != nil { return false }
            }
            let connection = replicaSet[t]
            var frame = header
            frame.volume = handles[connection]
            let sending = isRead ? nil : pieces[index].pages
            let receiving = isRead ? pieces[index].pages : nil
            pieces[index].attempts += 1
            do {
                // Never wait for a window slot while holding tickets (see `trySubmit`): when the
                // window is full, redeem ours first, then wait holding none.
                var ticket = try connections[connection].trySubmit(frame, sendingPages: sending, receivingPages: receiving)
                if ticket == nil {
                    drain(inFlight, submitted, pieces, &firstError)
                    submitted = 0
                    if firstError != nil { return false }
                    ticket = try connections[connection].submit(frame, sendingPages: sending, receivingPages: receiving)
                }
                inFlight[submitted] = InFlight(connection: connection, ticket: ticket!, piece: index)
                submitted += 1
            } catch {
                if Self.isServerFailure(error) {
                    markDown(connection, error)
                    if !isRead { noteMissedWrite(group: group, slot: connection) }
                    // A write counts on the others; a read tries the next replica next round.
                    if !isRead && targets > 1 { continue }
                    if isRead { return true }
                }
                pieces[index].error = error
                firstError = firstError ?? error
                return false
            }
        }
        return true
    }

    /// Waits for the first `count` requests of `inFlight` and records each outcome on its
    /// piece. A server failure marks the server down; a WRITE/TRIM piece that no replica
    /// acknowledged, or a refusal, becomes `firstError` (a FENCED reply wins: it is the one the
    /// operator must see).
    private func drain(_ inFlight: UnsafeMutableBufferPointer<InFlight>, _ count: Int, _ pieces: UnsafeMutableBufferPointer<Piece>,
                       _ firstError: inout RemoteMemError?) {
        var failed = [RemoteMemError?]()  // allocated only when a server fails
        for i in 0..<count {
            let connection = connections[inFlight[i].connection]
            let piece = inFlight[i].piece
            let operation = pieces[piece].header.opcodeValue ?? .read
            do {
                let reply = try connection.wait(inFlight[i].ticket)
                switch reply.status {
                case .ok: pieces[piece].acknowledged += 1
                case .fenced:
                    firstError = noteFenced(connection)
                    pieces[piece].error = firstError
                default:
                    let error = Self.refusal(reply, connection, operation.description)
                    pieces[piece].error = pieces[piece].error ?? error
                    firstError = firstError ?? error
                }
            } catch {
                if Self.isServerFailure(error) {
                    markDown(inFlight[i].connection, error)
                    if operation != .read { noteMissedWrite(group: pieces[piece].group, slot: inFlight[i].connection) }
                    if failed.isEmpty { failed = Array(repeating: nil, count: pieces.count) }
                    failed[piece] = error
                } else {
                    pieces[piece].error = pieces[piece].error ?? error
                    firstError = firstError ?? error
                }
            }
        }
        guard !failed.isEmpty else { return }
        for piece in pieces.indices {
            guard let error = failed[piece] else { continue }
            let operation = pieces[piece].header.opcodeValue ?? .read
            if operation == .read {
                // Asked again of the next healthy replica (or fails there with "all down").
                continue
            }
            if pieces[piece].acknowledged == 0 && pieces[piece].error == nil {
                pieces[piece].error = error
                firstError = firstError ?? error
            }
        }
    }
}
