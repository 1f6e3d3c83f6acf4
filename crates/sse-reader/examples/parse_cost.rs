//! What the parser costs per event on the stream the load generator reads:
//! 100,000 events as the gateways write them (`id:`, `event: message` and
//! one `data:` line with a 64-byte loadgen stamp, ~110 bytes each), handed
//! over in pieces of 4 to 16 KiB, so lines are split across pieces.
//!
//! Count instructions rather than time, which another process on the same
//! cores can change:
//!
//! ```sh
//! cargo build --release -p sse-reader --example parse_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     --collect-atstart=no --toggle-collect='*parse_cost::parse*' \
//!     target/release/examples/parse_cost borrowed
//! ```
//!
//! `Collected` divided by the number of events printed is the cost per
//! event; `owned` measures [`Parser::feed_into`] instead of
//! [`Parser::feed_with`].

use sse_reader::{Item, ItemRef, Parser};

const EVENTS: u64 = 100_000;

/// The body the gateways send for `EVENTS` loadgen messages.
fn stream() -> Vec<u8> {
    let mut body = b"retry: 3000\n\n".to_vec();
    for seq in 0..EVENTS {
        let mut message = format!(
            "lg 1 {} {seq} {}",
            seq % 16,
            1_764_138_600_000_000 + seq * 37
        );
        message.push(' ');
        while message.len() < 64 {
            message.push('x');
        }
        body.extend_from_slice(
            format!(
                "id: 1n5bd0q2tx0rk-{}\nevent: message\ndata: {message}\n\n",
                seq + 1
            )
            .as_bytes(),
        );
    }
    body
}

/// Piece sizes from 4 to 16 KiB, the same every run.
fn pieces(body: &[u8]) -> Vec<&[u8]> {
    let mut state: u32 = 0x9E37_79B9;
    let mut pieces = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (4096 + state as usize % (12 * 1024 + 1)).min(rest.len());
        let (piece, tail) = rest.split_at(size);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// Events seen and the bytes of their data, so nothing is optimized away.
#[inline(never)]
fn parse_owned(pieces: &[&[u8]]) -> (u64, u64) {
    let mut parser = Parser::new();
    let mut items = Vec::new();
    let (mut events, mut bytes) = (0, 0);
    for piece in pieces {
        items.clear();
        parser.feed_into(piece, &mut items);
        for item in &items {
            if let Item::Event(event) = item {
                events += 1;
                bytes += event.data.len() as u64;
            }
        }
    }
    (events, bytes)
}

#[inline(never)]
fn parse_borrowed(pieces: &[&[u8]]) -> (u64, u64) {
    let mut parser = Parser::new();
    let (mut events, mut bytes) = (0, 0);
    for piece in pieces {
        parser.feed_with(piece, |item| {
            if let ItemRef::Event(event) = item {
                events += 1;
                bytes += event.data.len() as u64;
            }
        });
    }
    (events, bytes)
}

fn main() {
    let body = stream();
    let pieces = pieces(&body);
    let mode = std::env::args().nth(1).unwrap_or_else(|| "borrowed".into());
    let (events, bytes) = match mode.as_str() {
        "owned" => parse_owned(&pieces),
        "borrowed" => parse_borrowed(&pieces),
        other => {
            eprintln!("usage: parse_cost [owned|borrowed], not {other:?}");
            std::process::exit(2);
        }
    };
    assert_eq!(events, EVENTS, "every event parsed");
    println!(
        "{events} events, {} bytes in {} pieces, {bytes} bytes of data",
        body.len(),
        pieces.len()
    );
}
