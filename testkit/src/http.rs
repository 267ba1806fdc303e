//! A recording HTTP/1.1 server on loopback, for tests of clients that push
//! to a backend (Pyroscope's ingest): every request is answered `200 OK`
//! and handed to the test whole.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`, `GET`, …
    pub method: String,
    /// The request target: path and query, still percent-encoded.
    pub target: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

/// Serves HTTP/1.1 on 127.0.0.1, on a free port, keep-alive included,
/// answering every request 200 and sending it down the channel. The
/// server's threads end with the test process.
///
/// ```no_run
/// let (port, requests) = testkit::http::recording_server();
/// // ... point the client at http://127.0.0.1:{port} ...
/// for request in requests.try_iter() {
///     println!("{} {}", request.method, request.target);
/// }
/// ```
pub fn recording_server() -> (u16, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let port = listener.local_addr().map_or(0, |a| a.port());
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let sender = sender.clone();
            std::thread::spawn(move || serve(stream, sender));
        }
    });
    (port, receiver)
}

/// Requests of one connection until the client closes it or sends
/// something that is not HTTP/1.1.
fn serve(stream: TcpStream, sender: mpsc::Sender<Request>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                return;
            };
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Request {
            method,
            target,
            content_type: headers.get("content-type").cloned(),
            body,
        };
        if sender.send(request).is_err() {
            return;
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// `text` with its `%XX` escapes decoded (and `+` left as is); a malformed
/// escape is kept literally.
///
/// ```
/// assert_eq!(testkit::http::percent_decode("a%7Bb%3D1%7D"), "a{b=1}");
/// ```
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
