//! Free loopback ports for the processes the harness starts.

use std::io;
use std::net::TcpListener;

/// Picks `n` distinct free ports on 127.0.0.1.
///
/// Every listener is held until all ports are chosen so the kernel cannot hand the same port out
/// twice; they are released together just before the caller passes them to a child process.
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// One free port on 127.0.0.1.
pub fn free_port() -> io::Result<u16> {
    Ok(free_ports(1)?[0])
}
