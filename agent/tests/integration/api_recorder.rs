//! A stand-in for the Kubernetes API server that records what it is sent: it
//! answers every POST with 201 and the object back (named), anything else 404.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

pub struct ApiRecorder {
    pub url: String,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl ApiRecorder {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    while let Some(req) = read_request(&mut reader) {
                        let (status, body) = if req.method == "POST" {
                            let mut obj = req.body.clone();
                            let n = log.lock().unwrap().len();
                            let prefix = obj["metadata"]["generateName"].as_str().unwrap_or("obj-").to_string();
                            obj["metadata"]["name"] = format!("{prefix}{n}").into();
                            ("201 Created", obj.to_string())
                        } else {
                            (
                                "404 Not Found",
                                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#.into(),
                            )
                        };
                        log.lock().unwrap().push(req);
                        let head = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(body.as_bytes())).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, seen }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    /// A kubeconfig that points kubectl or kube-rs here with a bearer token.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fixture\n  cluster:\n    server: {}\n\
             users:\n- name: tester\n  user:\n    token: test-token\n\
             contexts:\n- name: fixture\n  context:\n    cluster: fixture\n    user: tester\n    namespace: {namespace}\n\
             current-context: fixture\n",
            self.url
        )
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Recorded> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse().ok()?,
            "authorization" => authorization = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Some(Recorded { method, path, authorization, body })
}
