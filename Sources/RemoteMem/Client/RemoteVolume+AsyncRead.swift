import Glibc

/// READ without waiting: a `PageTransfer`'s run is cut like a blocking read (by group, then by
/// `WireLimits.pagesPerRequestMax`), each piece submitted with `ServerConnection.submitAsync`,
/// and the replies land straight in the transfer's pages from the receiver threads. Requests are
/// queued per connection and sent in one system call at `flushSubmissions` (the queue thread
/// calls it once per batch of guest requests).
extension RemoteVolume {
    public func startRead(_ transfer: PageTransfer) {
        transfer.reset()
        precondition(transfer.pageCount > 0 && transfer.pageCount <= PageTransfer.pagesMax, "transfer of \(transfer.pageCount) pages")
        precondition(transfer.firstPage <= pageCount && UInt64(transfer.pageCount) <= pageCount - transfer.firstPage,
                     "transfer past the volume")
        var offset = 0
        while offset < transfer.pageCount {
            let page = transfer.firstPage + UInt64(offset)
            let (group, n) = Self.piece(at: page, remaining: transfer.pageCount - offset)
            let placed: Int?
            do {
                placed = try replicas(ofGroup: group, placing: false, forWriting: false).map { $0[0] }
            } catch {
                transfer.fail(error)
                break
            }
            if let placed {
                var header = FrameHeader(opcode: .read, requestID: 0, pageCount: UInt32(n), epoch: epoch, page: page)
                header.volume = handles[placed]
                transfer.addPiece(header, connection: placed, offset: offset)
            } else {
                // Never written: zeros, and no request.
                for i in offset..<(offset + n) {
                    // SAFETY: each page pointer addresses a 4 KiB buffer the caller provided.
                    transfer.pages[i].initializeMemory(as: UInt8.self, repeating: 0, count: WireLimits.pageSize)
                }
            }
            offset += n
        }
        if transfer.error == nil { submitPending(transfer) }
        _ = pollTransfer(transfer)
    }

    public func pollTransfer(_ transfer: PageTransfer) -> Bool {
        if transfer.finished { return true }
        if transfer.error == nil && transfer.submitted < transfer.pieceCount { submitPending(transfer) }
        // A piece not sent (window full) is still to come, unless the transfer already failed.
        if transfer.error == nil && transfer.submitted < transfer.pieceCount { return false }
        for i in 0..<transfer.submitted where !transfer.requests[i].isFinished { return false }
        // A piece whose server failed is asked again of the group's next healthy replica.
        var retried = false
        for i in 0..<transfer.submitted {
            guard let error = transfer.requests[i].error, Self.isServerFailure(error), transfer.error == nil else { continue }
            markDown(transfer.connections[i], error)
            let group = Int(transfer.headers[i].page / ClientLimits.groupPages)
            do {
                guard let next = try replicas(ofGroup: group, placing: false, forWriting: false) else { continue }
                transfer.connections[i] = next[0]
                transfer.headers[i].volume = handles[next[0]]
                let pages = UnsafeBufferPointer(start: transfer.pages + transfer.offsets[i], count: Int(transfer.headers[i].pageCount))
                // If the window is full the request keeps its error and the next poll tries
                // again (replies from that server free slots meanwhile).
                _ = try connections[next[0]].submitAsync(transfer.headers[i], sendingPages: nil, receivingPages: pages,
                                                         request: transfer.requests[i])
                retried = true
            } catch {
                transfer.fail(error)
            }
        }
        if retried { return false }
        for i in 0..<transfer.submitted {
            let request = transfer.requests[i]
            let connection = connections[transfer.connections[i]]
            if let error = request.error {
                transfer.fail(error)
            } else if request.status == WireStatus.fenced.rawValue {
                transfer.error = noteFenced(connection)
            } else if request.status != WireStatus.ok.rawValue {
                transfer.fail(Self.refusal(status: request.status ?? 0, connection, "READ"))
            }
        }
        transfer.finished = true
        return true
    }

    public func flushSubmissions() {
        for connection in connections { connection.sendDeferred() }
    }

    public func waitTransfer(_ transfer: PageTransfer) {
        flushSubmissions()
        // Replies are bounded by the request timeout (the connection fails them after it), and
        // a piece waiting for the window is sent as soon as another request frees a slot.
        var spins = 0
        while !pollTransfer(transfer) {
            spins += 1
            if spins > 64 { usleep(20) }
        }
    }

    /// Sends the transfer's pieces not sent yet, in order, until a window is full.
    private func submitPending(_ transfer: PageTransfer) {
        while transfer.submitted < transfer.pieceCount {
            let i = transfer.submitted
            let offset = transfer.offsets[i]
            let pages = UnsafeBufferPointer(start: transfer.pages + offset, count: Int(transfer.headers[i].pageCount))
            do {
                guard try connections[transfer.connections[i]].submitAsync(transfer.headers[i], sendingPages: nil,
                                                                          receivingPages: pages, request: transfer.requests[i],
                                                                          deferSend: true)
                else { return }
            } catch {
                transfer.fail(error)
                return
            }
            transfer.submitted += 1
        }
    }
}
