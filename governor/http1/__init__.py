"""governor's own HTTP/1.1 engine: the wire, flow control, the client side, the upstream side."""
