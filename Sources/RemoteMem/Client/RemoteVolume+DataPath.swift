import LinuxSystem

/// READ, WRITE and TRIM for runs of pages: cut by group and by `WireLimits.pagesPerRequestMax`,
/// sent to each group's server, all in flight before the first wait.
extension RemoteVolume {
    /// One request in flight for a batch.
    struct InFlight {
        var connection: Int
        var ticket: RequestTicket
    }

    public func readPages(_ runs: UnsafeBufferPointer<PageRun>) throws(RemoteMemError) {
        try transfer(.read, runs)
    }

    public func writePages(_ runs: UnsafeBufferPointer<PageRun>) throws(RemoteMemError) {
        try transfer(.write, runs)
    }

    public func trimPages(from firstPage: UInt64, count: UInt64) throws(RemoteMemError) {
        precondition(firstPage <= pageCount && count <= pageCount - firstPage, "trim past the volume")
        var firstError: RemoteMemError?
        withUnsafeTemporaryAllocation(of: InFlight.self, capacity: ClientLimits.requestsPerCallMax) { inFlight in
            var submitted = 0
            var page = firstPage
            let end = firstPage + count
            while page < end {
                let group = Int(page / ClientLimits.groupPages)
                let n = min(end, UInt64(group + 1) * ClientLimits.groupPages) - page
                let header = FrameHeader(opcode: .trim, requestID: 0, pageCount: UInt32(n), epoch: epoch, page: page)
                page += n
                guard submit(header, group: group, placing: false, pages: nil, into: inFlight, &submitted, &firstError) else { break }
            }
            drain(inFlight, submitted, operation: .trim, &firstError)
        }
        if let firstError { throw firstError }
    }

    /// Sends every piece of `runs` and waits for all of them. Never returns while a request
    /// may still write into a run's pages.
    private func transfer(_ opcode: Opcode, _ runs: UnsafeBufferPointer<PageRun>) throws(RemoteMemError) {
        var firstError: RemoteMemError?
        let pagesMax = UInt64(WireLimits.pagesPerRequestMax)
        withUnsafeTemporaryAllocation(of: InFlight.self, capacity: ClientLimits.requestsPerCallMax) { inFlight in
            var submitted = 0
            runs: for run in runs {
                precondition(run.firstPage <= pageCount && UInt64(run.pageCount) <= pageCount - run.firstPage, "run past the volume")
                var offset = 0
                while offset < run.pageCount {
                    let page = run.firstPage + UInt64(offset)
                    let group = Int(page / ClientLimits.groupPages)
                    let n = Int(min(UInt64(run.pageCount - offset), UInt64(group + 1) * ClientLimits.groupPages - page, pagesMax))
                    let pages = UnsafeBufferPointer(start: run.pages + offset, count: n)
                    offset += n
                    let header = FrameHeader(opcode: opcode, requestID: 0, pageCount: UInt32(n), epoch: epoch, page: page)
                    guard submit(header, group: group, placing: opcode == .write, pages: pages, into: inFlight,
                                 &submitted, &firstError)
                    else { break runs }
                }
            }
            drain(inFlight, submitted, operation: opcode, &firstError)
        }
        if let firstError { throw firstError }
    }

    /// Sends one request for `group` (READ of a never-placed group: zero-fills `pages`, no
    /// request; TRIM of one: nothing). Drains the batch first if it is full. Returns false
    /// (with `firstError` set) if the batch must stop.
    private func submit(_ header: FrameHeader, group: Int, placing: Bool, pages: UnsafeBufferPointer<UnsafeMutableRawPointer>?,
                        into inFlight: UnsafeMutableBufferPointer<InFlight>, _ submitted: inout Int,
                        _ firstError: inout RemoteMemError?) -> Bool {
        let operation = header.opcodeValue ?? .read
        let connection: Int
        do {
            var placed = try connectionIndex(ofGroup: group, placing: false)
            if placed == nil && placing {
                // Placing a group publishes the table on every server (METADATA_PUT): redeem
                // our own tickets first so they do not hold the window slots it needs.
                drain(inFlight, submitted, operation: operation, &firstError)
                submitted = 0
                if firstError != nil { return false }
                placed = try connectionIndex(ofGroup: group, placing: true)
            }
            guard let placed else {
                if header.opcode == Opcode.read.rawValue, let pages {
                    // SAFETY: each destination is a 4 KiB page buffer the caller provided.
                    for page in pages { page.initializeMemory(as: UInt8.self, repeating: 0, count: WireLimits.pageSize) }
                }
                return true
            }
            connection = placed
        } catch {
            firstError = firstError ?? error
            return false
        }
        if submitted == inFlight.count {
            drain(inFlight, submitted, operation: operation, &firstError)
            submitted = 0
            if firstError != nil { return false }
        }
        var frame = header
        frame.volume = handles[connection]
        let isRead = header.opcode == Opcode.read.rawValue
        let sending = isRead ? nil : pages
        let receiving = isRead ? pages : nil
        do {
            // Never wait for a window slot while holding tickets (see `trySubmit`): when the
            // window is full, redeem ours first, then wait holding none.
            var ticket = try connections[connection].trySubmit(frame, sendingPages: sending, receivingPages: receiving)
            if ticket == nil {
                drain(inFlight, submitted, operation: operation, &firstError)
                submitted = 0
                if firstError != nil { return false }
                ticket = try connections[connection].submit(frame, sendingPages: sending, receivingPages: receiving)
            }
            inFlight[submitted] = InFlight(connection: connection, ticket: ticket!)
            submitted += 1
            return true
        } catch {
            firstError = firstError ?? error
            return false
        }
    }

    /// Waits for the first `count` requests of `inFlight`, keeping the first error (a FENCED
    /// reply wins: it is the one the operator must see).
    private func drain(_ inFlight: UnsafeMutableBufferPointer<InFlight>, _ count: Int, operation: Opcode,
                       _ firstError: inout RemoteMemError?) {
        for i in 0..<count {
            let connection = connections[inFlight[i].connection]
            do {
                let reply = try connection.wait(inFlight[i].ticket)
                switch reply.status {
                case .ok: continue
                case .fenced: firstError = noteFenced(connection)
                default: firstError = firstError ?? Self.refusal(reply, connection, operation.description)
                }
            } catch {
                firstError = firstError ?? error
            }
        }
    }
}
