//! Table tests of [`FrameMeter`]: no sockets, the clock passed in.

use std::time::Duration;

use super::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("short").to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// What a browser sends on a new connection: the preface, SETTINGS, WINDOW_UPDATE, a few
/// PRIORITY frames, HEADERS, the SETTINGS ACK.
fn browser_start() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
    out.extend(frame(0x8, 0, 0, &[0, 0xbf, 0, 1]));
    for i in 0..6u32 {
        out.extend(frame(PRIORITY, 0, 3 + 2 * i, &[0, 0, 0, 0, 200]));
    }
    out.extend(frame(0x1, 0x5, 1, &[0x82, 0x87, 0x84]));
    out.extend(frame(SETTINGS, ACK, 0, &[]));
    out
}

#[test]
fn browser_like_traffic_never_trips_however_it_is_split() {
    let bytes = browser_start();
    for split in 0..bytes.len() {
        let mut meter = FrameMeter::default();
        let now = Instant::now();
        assert_eq!(meter.feed(&bytes[..split], now), None, "split at {split}");
        assert_eq!(meter.feed(&bytes[split..], now), None, "split at {split}");
        assert!(meter.is_h2());
        assert_eq!(meter.last_stream(), 13, "split at {split}");
    }
    // A long-lived connection: a PING every 10 s and a SETTINGS change now and then.
    let mut meter = FrameMeter::default();
    let t0 = Instant::now();
    assert_eq!(meter.feed(&browser_start(), t0), None);
    for i in 0..10_000u64 {
        let at = t0 + Duration::from_millis(10 * i);
        assert_eq!(
            meter.feed(&frame(PING, 0, 0, &[0; 8]), at),
            None,
            "ping {i}"
        );
    }
}

#[test]
fn a_ping_flood_trips_past_the_burst() {
    let mut meter = FrameMeter::default();
    let now = Instant::now();
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    assert_eq!(meter.feed(&bytes, now), None);
    // The SETTINGS took one token: 999 PINGs are within the burst, the 1000th is not.
    let ping = frame(PING, 0, 0, &[0; 8]);
    for i in 0..999 {
        assert_eq!(meter.feed(&ping, now), None, "ping {i}");
    }
    assert_eq!(meter.feed(&ping, now), Some(Flood::Ping));
}

#[test]
fn ping_acks_settings_and_priority_floods_trip_too_but_settings_acks_do_not() {
    for (kind, flags, want) in [
        (PING, ACK, Some(Flood::Ping)),
        (SETTINGS, 0, Some(Flood::Settings)),
        (PRIORITY, 0, Some(Flood::Priority)),
        (SETTINGS, ACK, None),
        // DATA and WINDOW_UPDATE are h2's to limit.
        (0x0, 0, None),
        (0x8, 0, None),
    ] {
        let mut meter = FrameMeter::default();
        let now = Instant::now();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..1001 {
            bytes.extend(frame(kind, flags, 0, &[0; 8]));
        }
        assert_eq!(
            meter.feed(&bytes, now),
            want,
            "type {kind:#x} flags {flags}"
        );
    }
}

#[test]
fn the_bucket_refills_with_time() {
    let mut meter = FrameMeter::new(100.0, 10.0);
    let t0 = Instant::now();
    let ping = frame(PING, 0, 0, &[0; 8]);
    let mut bytes = PREFACE.to_vec();
    for _ in 0..10 {
        bytes.extend(ping.clone());
    }
    assert_eq!(meter.feed(&bytes, t0), None);
    assert_eq!(meter.feed(&ping, t0), Some(Flood::Ping), "empty");
    let mut meter = FrameMeter::new(100.0, 10.0);
    assert_eq!(meter.feed(&bytes, t0), None);
    // 50 ms later five tokens are back.
    let later = t0 + Duration::from_millis(50);
    for i in 0..5 {
        assert_eq!(meter.feed(&ping, later), None, "ping {i}");
    }
    assert_eq!(meter.feed(&ping, later), Some(Flood::Ping));
}

#[test]
fn http1_passes_through_at_no_cost() {
    let mut meter = FrameMeter::default();
    let now = Instant::now();
    assert_eq!(meter.feed(b"GET / HTTP/1.1\r\n", now), None);
    assert!(!meter.is_h2());
    // Whatever follows is not parsed, PING-looking bytes included.
    let mut bytes = Vec::new();
    for _ in 0..5000 {
        bytes.extend(frame(PING, 0, 0, &[0; 8]));
    }
    assert_eq!(meter.feed(&bytes, now), None);
    // A preface cut short by a difference is HTTP/1 too.
    let mut meter = FrameMeter::default();
    assert_eq!(meter.feed(b"PRI * HTTP/2.0\r\n\r\nXX", now), None);
    assert!(!meter.is_h2());
}

#[test]
fn a_huge_payload_is_skipped_without_buffering() {
    let mut meter = FrameMeter::default();
    let now = Instant::now();
    let mut bytes = PREFACE.to_vec();
    // A DATA frame announcing 16 MiB - 1; then 1 MiB of its payload in pieces.
    bytes.extend([0xff, 0xff, 0xff, 0x0, 0, 0, 0, 0, 1]);
    assert_eq!(meter.feed(&bytes, now), None);
    let piece = vec![PING; 64 * 1024];
    for _ in 0..16 {
        assert_eq!(
            meter.feed(&piece, now),
            None,
            "payload bytes are not frames"
        );
    }
    assert!(!meter.walker.at_boundary());
}

#[test]
fn the_goaway_frame_is_well_formed() {
    let f = goaway(7);
    let len = u32::from_be_bytes([0, f[0], f[1], f[2]]) as usize;
    assert_eq!(f.len(), 9 + len);
    assert_eq!(f[3], 0x7, "GOAWAY");
    assert_eq!(&f[5..9], &[0, 0, 0, 0], "stream 0");
    assert_eq!(u32::from_be_bytes([f[9], f[10], f[11], f[12]]), 7);
    assert_eq!(u32::from_be_bytes([f[13], f[14], f[15], f[16]]), 0xb);
}
