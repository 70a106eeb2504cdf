//! The Kubernetes API fixture server (DESIGN.md, test strategy 6): a small
//! HTTP server on `127.0.0.1:<random port>` that speaks the slice of the
//! Kubernetes API that `kubectl get` and the osl CLI (kube-rs) use, checked
//! against the real `kubectl` in `tests/api.rs`.
//!
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//!   `/apis/{group}/{version}`: the legacy documents, which kubectl falls
//!   back to from aggregated discovery when the answer is plain JSON
//!   (`kubectl get` and `port-forward` ask for nothing else; other paths,
//!   `/openapi/*` among them, are a 404 `Status`);
//! - objects the test adds as JSON (pods, events, namespaces, nodes,
//!   deployments, statefulsets, daemonsets, replicasets, jobs, cronjobs,
//!   events.k8s.io events): GET one, LIST per namespace and across namespaces
//!   with `labelSelector` and `fieldSelector`, as JSON or as the `Table` that
//!   `kubectl get` prints; POST (create, `generateName`), PUT, PATCH (merge
//!   and strategic merge, approximated), DELETE; `watch=true` replays ADDED
//!   events and ends;
//! - `pods/{name}/ephemeralcontainers`: GET, PATCH (strategic merge, JSON
//!   merge, JSON patch) and PUT add the new containers, give each a running
//!   status with a containerd container id, and call the test's
//!   [`ApiServer::on_ephemeral`] hook first;
//! - `pods/{name}/portforward`, bridged to the pod's [`Connector`]: WebSocket
//!   `v4.channel.k8s.io` (kube-rs), and SPDY/3.1 `portforward.k8s.io`
//!   tunneled in a WebSocket or after an `Upgrade: SPDY/3.1` POST (kubectl).
//!
//! Errors are `Status` objects like the apiserver's (404 NotFound, 403
//! Forbidden from [`ApiServer::forbid`], 409 AlreadyExists, 400 BadRequest,
//! 415 UnsupportedMediaType). Every request is recorded ([`ApiServer::requests`]).
//!
//! The server speaks plain HTTP. kube-rs sends the kubeconfig's bearer token
//! over it; kubectl (client-go) sends credentials only over TLS, so its
//! requests are recorded without `authorization`.

mod discovery;
mod pod_port;
mod portforward;
mod selector;
mod spdy;
mod store;
mod table;
mod time;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use discovery::Resource;
use selector::{FieldSelector, LabelSelector};
use store::Store;
use table::Include;

/// The bearer token of the kubeconfig's user.
pub const TOKEN: &str = "osl-fixture-token";
/// The user the token stands for, as RBAC messages name it.
pub const USER: &str = "tester";

/// Opens a TCP connection to a port inside a pod's network namespace (the
/// pod sandbox's `Pod::connect`), as the kubelet does for a port-forward.
pub type Connector = Arc<dyn Fn(u16) -> std::io::Result<std::net::TcpStream> + Send + Sync>;

/// Called with (namespace, pod, container JSON) for each ephemeral container
/// added, before the API answers and before its status says running.
pub type EphemeralHook = Arc<dyn Fn(&str, &str, &Value) + Send + Sync>;

/// An RFC 3339 timestamp `secs` seconds ago, for fixtures whose AGE or
/// RESTARTS columns a test asserts.
pub fn timestamp_ago(secs: u64) -> String {
    time::rfc3339(time::now() - secs as i64)
}

/// One request the server answered.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as sent (`/api/v1/namespaces/test/pods?labelSelector=app%3Ddemo`).
    pub path: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub accept: Option<String>,
    /// Every header, names lowercase, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body: its JSON, or a JSON string of its text when it is not JSON;
    /// `None` when empty.
    pub body: Option<Value>,
    /// The status answered (101 for an upgraded port-forward).
    pub status: u16,
}

impl RecordedRequest {
    /// The path without the query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// A query parameter, decoded.
    pub fn query(&self, key: &str) -> Option<String> {
        let q = self.path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        parse_query(q).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A header by name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct State {
    store: Store,
    connectors: HashMap<(String, String), Connector>,
    hook: Option<EphemeralHook>,
    forbidden: HashSet<(String, String)>,
    requests: Vec<RecordedRequest>,
    addr: SocketAddr,
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fixture server. It runs on a tokio runtime of its own on a background
/// thread, so sync tests use it as they are; dropping it stops it.
pub struct ApiServer {
    shared: Shared,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Starts a server on `127.0.0.1:<random port>` with no objects.
    pub fn start() -> ApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("listener address");
        let shared: Shared = Arc::new(Mutex::new(State {
            store: Store::new(),
            connectors: HashMap::new(),
            hook: None,
            forbidden: HashSet::new(),
            requests: Vec::new(),
            addr,
        }));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("osl-api-fixture".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("osl-api-fixture")
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(serve(listener, s, rx));
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
            })
            .expect("spawning the API fixture thread");
        ApiServer { shared, addr, shutdown: Some(tx), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at the server: cluster `osl-fixture`, user
    /// [`USER`] with bearer token [`TOKEN`], and the current context
    /// `osl-fixture` in `namespace`.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: osl-fixture\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: {USER}\n  user:\n    token: {TOKEN}\n\
             contexts:\n\
             - name: osl-fixture\n  context:\n    cluster: osl-fixture\n    user: {USER}\n    namespace: {namespace}\n\
             current-context: osl-fixture\n\
             preferences: {{}}\n",
            url = self.url(),
        )
    }

    /// Writes [`ApiServer::kubeconfig`] to `dir/kubeconfig` and returns its path.
    pub fn write_kubeconfig(&self, dir: impl AsRef<Path>, namespace: &str) -> PathBuf {
        let path = dir.as_ref().join("kubeconfig");
        std::fs::write(&path, self.kubeconfig(namespace)).expect("writing the kubeconfig");
        path
    }

    /// Adds (or replaces) an object. Its `apiVersion` and `kind` say which
    /// resource it is; the namespace is `metadata.namespace` (`default` when
    /// absent); uid, resourceVersion and creationTimestamp are filled when
    /// absent, as the apiserver would. Returns the object as stored.
    ///
    /// Panics on a kind the server does not serve or an object without a name.
    pub fn add(&self, object: Value) -> Value {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let res = discovery::by_kind(api_version, kind)
            .unwrap_or_else(|| panic!("the API fixture does not serve {api_version} {kind}"));
        let ns = object["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        lock(&self.shared).store.insert(res, &ns, object)
    }

    /// The stored object of a resource (`pods`, `deployments`, … or
    /// `events.events.k8s.io`), as the API would answer it.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = resource_by_name(resource)?;
        lock(&self.shared).store.get(res, namespace, name)
    }

    /// Removes an object; returns it.
    pub fn remove(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = resource_by_name(resource)?;
        lock(&self.shared).store.remove(res, namespace, name)
    }

    /// Every stored object of a resource (`pods`, `events`, …) in a namespace,
    /// or in all namespaces with `None`.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(res) = resource_by_name(resource) else { return Vec::new() };
        lock(&self.shared).store.list(res, namespace)
    }

    /// Sets how port-forwards to a pod reach its ports. Without one, every
    /// port of the pod refuses connections.
    pub fn set_connector(&self, namespace: &str, pod: &str, connector: Connector) {
        lock(&self.shared).connectors.insert((namespace.to_string(), pod.to_string()), connector);
    }

    /// Sets the hook called for each ephemeral container added (namespace,
    /// pod, the container's JSON), e.g. to start the agent in the pod sandbox.
    pub fn on_ephemeral(&self, hook: impl Fn(&str, &str, &Value) + Send + Sync + 'static) {
        lock(&self.shared).hook = Some(Arc::new(hook));
    }

    /// Makes a verb on a resource forbidden: `("create", "pods/portforward")`,
    /// `("patch", "pods/ephemeralcontainers")`, `("list", "pods")`,
    /// `("get", "deployments")`; `"*"` matches any verb or resource. The
    /// answer is a 403 `Status` with the RBAC message. Verbs are the RBAC
    /// ones: get, list, watch, create, update, patch, delete; a port-forward
    /// is `create` on `pods/portforward`.
    pub fn forbid(&self, verb: &str, resource: &str) {
        lock(&self.shared).forbidden.insert((verb.to_string(), resource.to_string()));
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared).requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared).requests.clear();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `pods`, `deployments.apps`, `events.events.k8s.io`, or a plural alone.
fn resource_by_name(resource: &str) -> Option<&'static Resource> {
    discovery::RESOURCES
        .iter()
        .find(|r| r.qualified() == resource)
        .or_else(|| discovery::RESOURCES.iter().find(|r| r.plural == resource))
}

async fn serve(listener: std::net::TcpListener, shared: Shared, mut shutdown: tokio::sync::oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------
// requests and answers

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                out.push(hex(b[i + 1]).unwrap_or(0) * 16 + hex(b[i + 2]).unwrap_or(0));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Value,
    /// Sent instead of `body` when set (a watch's event stream).
    raw: Option<String>,
}

const JSON: &str = "application/json";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn ok(status: u16, body: Value) -> Reply {
    Reply { status, content_type: JSON, body, raw: None }
}

fn status_reply(code: u16, reason: &str, message: String, details: Value) -> Reply {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        body["details"] = details;
    }
    ok(code, body)
}

fn details(res: &Resource, name: Option<&str>) -> Value {
    let mut d = json!({"kind": res.plural});
    if let Some(n) = name {
        d["name"] = json!(n);
    }
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    d
}

fn not_found(res: &Resource, name: &str) -> Reply {
    status_reply(404, "NotFound", format!("{} \"{name}\" not found", res.qualified()), details(res, Some(name)))
}

fn no_such_path() -> Reply {
    status_reply(404, "NotFound", "the server could not find the requested resource".into(), json!({}))
}

fn bad_request(message: String) -> Reply {
    status_reply(400, "BadRequest", message, Value::Null)
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut body = match reply.raw {
        Some(raw) => raw.into_bytes(),
        None => serde_json::to_vec(&reply.body).unwrap_or_default(),
    };
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    resp.headers_mut()
        .insert("audit-id", HeaderValue::from_str(&store::uid()).unwrap_or(HeaderValue::from_static("0")));
    resp.headers_mut().insert("cache-control", HeaderValue::from_static("no-cache, private"));
    resp
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn record(parts: &hyper::http::request::Parts, body: &[u8], status: u16) -> RecordedRequest {
    RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| parts.uri.path().to_string()),
        content_type: header_str(&parts.headers, header::CONTENT_TYPE),
        authorization: header_str(&parts.headers, header::AUTHORIZATION),
        accept: header_str(&parts.headers, header::ACCEPT),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: if body.is_empty() {
            None
        } else {
            Some(
                serde_json::from_slice(body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
            )
        },
        status,
    }
}

async fn handle(shared: Shared, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query().unwrap_or_default());
    let is_portforward = path.ends_with("/portforward") && path.contains("/pods/");
    if is_portforward {
        let resp = portforward_request(&shared, parts, body, &path, &query).await;
        return Ok(resp);
    }
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let reply = route(&shared, &parts.method, &path, &query, &parts.headers, &bytes).await;
    lock(&shared).requests.push(record(&parts, &bytes, reply.status));
    Ok(to_response(reply))
}

/// The RBAC verb of a request.
fn verb(method: &Method, name: Option<&str>, sub: Option<&str>, query: &[(String, String)]) -> &'static str {
    if matches!(sub, Some("portforward" | "exec" | "attach" | "proxy")) {
        return "create";
    }
    let watch = query.iter().any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if name.is_some() => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

fn forbidden_reply(
    state: &State,
    verb: &str,
    res: &Resource,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Option<Reply> {
    let resource = match sub {
        Some(s) => format!("{}/{s}", res.plural),
        None => res.plural.to_string(),
    };
    let hit = state.forbidden.iter().any(|(v, r)| {
        (v == verb || v == "*") && (*r == resource || *r == "*" || (sub.is_none() && *r == res.qualified()))
    });
    if !hit {
        return None;
    }
    let subject = match name {
        Some(n) => format!("{} \"{n}\"", res.qualified()),
        None => res.qualified(),
    };
    let scope = match ns {
        Some(ns) if res.namespaced => format!("in the namespace \"{ns}\""),
        _ => "at the cluster scope".to_string(),
    };
    Some(status_reply(
        403,
        "Forbidden",
        format!(
            "{subject} is forbidden: User \"{USER}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
            res.group
        ),
        details(res, name),
    ))
}

/// A parsed resource path.
struct Target<'a> {
    res: &'static Resource,
    ns: Option<&'a str>,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn parse_target<'a>(group: &str, version: &str, rest: &[&'a str]) -> Option<Target<'a>> {
    let t = |plural: &str, ns, name, sub| {
        discovery::by_path(group, version, plural).map(|res| Target { res, ns, name, sub })
    };
    match rest {
        ["namespaces", ns, plural, name, sub] => t(plural, Some(*ns), Some(*name), Some(*sub)),
        ["namespaces", ns, plural, name] => t(plural, Some(*ns), Some(*name), None),
        ["namespaces", ns, plural] => t(plural, Some(*ns), None, None),
        ["namespaces", name] if group.is_empty() => t("namespaces", None, Some(*name), None),
        [plural, name, sub] => t(plural, None, Some(*name), Some(*sub)),
        [plural, name] => t(plural, None, Some(*name), None),
        [plural] => t(plural, None, None, None),
        _ => None,
    }
    .filter(|t| t.res.namespaced || t.ns.is_none())
}

async fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let addr = lock(shared).addr;
    let target = match segs.as_slice() {
        ["version"] => return ok(200, discovery::version()),
        ["api"] => return ok(200, discovery::api_versions(&addr.to_string())),
        ["apis"] => return ok(200, discovery::api_group_list()),
        ["api", v] => return discovery::resource_list("", v).map(|l| ok(200, l)).unwrap_or_else(no_such_path),
        ["apis", g] => return discovery::api_group(g).map(|l| ok(200, l)).unwrap_or_else(no_such_path),
        ["apis", g, v] => return discovery::resource_list(g, v).map(|l| ok(200, l)).unwrap_or_else(no_such_path),
        ["api", v, rest @ ..] => parse_target("", v, rest),
        ["apis", g, v, rest @ ..] => parse_target(g, v, rest),
        _ => None,
    };
    let Some(Target { res, ns, name, sub }) = target else { return no_such_path() };
    let verb = verb(method, name, sub, query);
    if let Some(denied) = forbidden_reply(&lock(shared), verb, res, ns, name, sub) {
        return denied;
    }
    let q = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let as_table = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("as=Table"));
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let content_type = content_type.split(';').next().unwrap_or_default().trim().to_string();

    match (method.clone(), name, sub) {
        (Method::GET, None, None) => {
            let labels = match q("labelSelector").map(LabelSelector::parse).transpose() {
                Ok(s) => s.unwrap_or_default(),
                Err(e) => return bad_request(e),
            };
            let fields = match q("fieldSelector").map(FieldSelector::parse).transpose() {
                Ok(s) => s.unwrap_or_default(),
                Err(e) => return bad_request(e),
            };
            let (items, rv) = {
                let st = lock(shared);
                (st.store.list(res, ns), st.store.resource_version())
            };
            let items: Vec<Value> = items
                .into_iter()
                .filter(|o| {
                    labels.matches(o.pointer("/metadata/labels").and_then(Value::as_object)) && fields.matches(o)
                })
                .collect();
            if verb == "watch" {
                // A watch that replays what exists and ends: enough for a
                // client that lists then watches.
                let events: Vec<String> =
                    items.iter().map(|o| json!({"type": "ADDED", "object": o}).to_string()).collect();
                return Reply { status: 200, content_type: JSON, body: Value::Null, raw: Some(events.join("\n")) };
            }
            if as_table {
                return Reply {
                    status: 200,
                    content_type: TABLE,
                    body: table::table(res, &items, &rv, Include::parse(q("includeObject"))),
                    raw: None,
                };
            }
            let items: Vec<Value> = items
                .into_iter()
                .map(|mut o| {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                    o
                })
                .collect();
            ok(
                200,
                json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": {"resourceVersion": rv}, "items": items}),
            )
        }
        (Method::GET, Some(name), None | Some("ephemeralcontainers" | "status")) => {
            let obj = lock(shared).store.get(res, ns.unwrap_or_default(), name);
            match obj {
                None => not_found(res, name),
                Some(o) if as_table => {
                    let rv = o["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
                    Reply {
                        status: 200,
                        content_type: TABLE,
                        body: table::table(res, &[o], &rv, Include::parse(q("includeObject"))),
                        raw: None,
                    }
                }
                Some(o) => ok(200, o),
            }
        }
        (Method::POST, None, None) => create(shared, res, ns.unwrap_or_default(), body),
        (Method::PATCH | Method::PUT, Some(name), Some("ephemeralcontainers")) if res.kind == "Pod" => {
            ephemeral(shared, res, ns.unwrap_or_default(), name, method, &content_type, body).await
        }
        (Method::PUT, Some(name), None | Some("status")) => {
            let Ok(obj) = serde_json::from_slice::<Value>(body) else {
                return bad_request("the body is not JSON".into());
            };
            let mut st = lock(shared);
            let ns = ns.unwrap_or_default();
            if st.store.get(res, ns, name).is_none() {
                return not_found(res, name);
            }
            ok(200, st.store.update(res, ns, name, obj))
        }
        (Method::PATCH, Some(name), None | Some("status")) => {
            let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                return bad_request("the body is not JSON".into());
            };
            let mut st = lock(shared);
            let ns = ns.unwrap_or_default();
            let Some(mut obj) = st.store.get(res, ns, name) else { return not_found(res, name) };
            match content_type.as_str() {
                "application/merge-patch+json" => merge_patch(&mut obj, &patch, false),
                "application/strategic-merge-patch+json" => merge_patch(&mut obj, &patch, true),
                "application/json-patch+json" => {
                    if let Err(e) = json_patch(&mut obj, &patch) {
                        return status_reply(422, "Invalid", e, Value::Null);
                    }
                }
                other => return unsupported(other),
            }
            ok(200, st.store.update(res, ns, name, obj))
        }
        (Method::DELETE, Some(name), None) => {
            let removed = lock(shared).store.remove(res, ns.unwrap_or_default(), name);
            match removed {
                Some(o) => ok(200, o),
                None => not_found(res, name),
            }
        }
        (_, _, Some(sub)) if !res.subresources.iter().any(|(s, _, _)| *s == sub) => no_such_path(),
        _ => status_reply(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_string(),
            Value::Null,
        ),
    }
}

fn unsupported(content_type: &str) -> Reply {
    status_reply(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
        ),
        Value::Null,
    )
}

fn create(shared: &Shared, res: &'static Resource, ns: &str, body: &[u8]) -> Reply {
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return bad_request("the body is not a JSON object".into());
    };
    if !obj.is_object() {
        return bad_request("the body is not a JSON object".into());
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if obj["metadata"]["name"].as_str().unwrap_or_default().is_empty() {
        let name = if let Some(g) = obj["metadata"]["generateName"].as_str() {
            format!("{g}{}", store::name_suffix())
        } else if res.kind == "Event" {
            let involved = obj.get("involvedObject").or_else(|| obj.get("regarding"));
            let base = involved.and_then(|o| o["name"].as_str()).unwrap_or("event");
            format!("{base}.{}", store::random_hex(16))
        } else {
            return status_reply(
                422,
                "Invalid",
                format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    res.kind
                ),
                Value::Null,
            );
        };
        obj["metadata"]["name"] = json!(name);
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let mut st = lock(shared);
    if st.store.get(res, ns, &name).is_some() {
        return status_reply(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
            details(res, Some(&name)),
        );
    }
    ok(201, st.store.insert(res, ns, obj))
}

/// RFC 7386 merge patch; with `by_name`, lists of objects with a `name`
/// merge element by element (the strategic merge patch of most pod lists).
fn merge_patch(target: &mut Value, patch: &Value, by_name: bool) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("an object");
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if v.is_null() {
            t.remove(k);
        } else if by_name
            && v.as_array().is_some_and(|a| a.iter().all(|e| e.get("name").is_some()))
            && t.get(k).is_some_and(Value::is_array)
        {
            let list = t.get_mut(k).and_then(Value::as_array_mut).expect("an array");
            for e in v.as_array().into_iter().flatten() {
                match list.iter_mut().find(|x| x.get("name") == e.get("name")) {
                    Some(x) => merge_patch(x, e, by_name),
                    None => list.push(e.clone()),
                }
            }
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v, by_name);
        }
    }
}

/// RFC 6902 JSON patch: add, replace, remove, test (`-` appends).
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    for op in patch.as_array().ok_or("a JSON patch is a list of operations")? {
        let path = op["path"].as_str().ok_or("an operation needs a path")?;
        let (parent_path, last) = path.rsplit_once('/').ok_or_else(|| format!("bad path {path:?}"))?;
        let last = last.replace("~1", "/").replace("~0", "~");
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        if op["op"] == "test" {
            if target.pointer(path) != Some(&value) {
                return Err(format!("test failed at {path}"));
            }
            continue;
        }
        let parent = target.pointer_mut(parent_path).ok_or_else(|| format!("no such path {parent_path:?}"))?;
        match (op["op"].as_str().unwrap_or_default(), parent) {
            ("add", Value::Array(a)) if last == "-" => a.push(value),
            ("add", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| format!("bad index in {path:?}"))?;
                if i > a.len() {
                    return Err(format!("index out of range in {path:?}"));
                }
                a.insert(i, value)
            }
            ("add" | "replace", Value::Object(o)) => {
                o.insert(last, value);
            }
            ("replace", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| format!("bad index in {path:?}"))?;
                *a.get_mut(i).ok_or_else(|| format!("index out of range in {path:?}"))? = value;
            }
            ("remove", Value::Object(o)) => {
                o.remove(&last);
            }
            ("remove", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| format!("bad index in {path:?}"))?;
                if i < a.len() {
                    a.remove(i);
                }
            }
            (other, _) => return Err(format!("unsupported JSON patch operation {other:?} at {path:?}")),
        }
    }
    Ok(())
}

/// PATCH or PUT of `pods/{name}/ephemeralcontainers`: the containers whose
/// names are new are appended to `spec.ephemeralContainers`; for each the
/// hook runs, then a running status with a containerd id is added.
async fn ephemeral(
    shared: &Shared,
    res: &'static Resource,
    ns: &str,
    name: &str,
    method: &Method,
    content_type: &str,
    body: &[u8],
) -> Reply {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else { return bad_request("the body is not JSON".into()) };
    let (new, hook) = {
        let mut st = lock(shared);
        let Some(pod) = st.store.get(res, ns, name) else { return not_found(res, name) };
        let wanted: Value = if *method == Method::PUT {
            patch.pointer("/spec/ephemeralContainers").cloned().unwrap_or(Value::Null)
        } else {
            match content_type {
                "application/strategic-merge-patch+json" | "application/merge-patch+json" => {
                    patch.pointer("/spec/ephemeralContainers").cloned().unwrap_or(Value::Null)
                }
                "application/json-patch+json" => {
                    let mut patched = pod.clone();
                    if let Err(e) = json_patch(&mut patched, &patch) {
                        return status_reply(422, "Invalid", e, Value::Null);
                    }
                    patched.pointer("/spec/ephemeralContainers").cloned().unwrap_or(Value::Null)
                }
                other => return unsupported(other),
            }
        };
        let existing: Vec<Value> =
            pod.pointer("/spec/ephemeralContainers").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut new = Vec::new();
        for c in wanted.as_array().into_iter().flatten() {
            let Some(cname) = c.get("name").and_then(Value::as_str) else {
                return status_reply(
                    422,
                    "Invalid",
                    format!("Pod \"{name}\" is invalid: spec.ephemeralContainers.name: Required value"),
                    Value::Null,
                );
            };
            let taken = existing.iter().chain(new.iter()).any(|e: &Value| e["name"] == cname);
            if !taken {
                new.push(c.clone());
            }
        }
        if !new.is_empty() {
            let mut pod = pod;
            let mut all = existing;
            all.extend(new.iter().cloned());
            pod["spec"]["ephemeralContainers"] = Value::Array(all);
            st.store.update(res, ns, name, pod);
        }
        (new, st.hook.clone())
    };
    if let Some(hook) = hook {
        for c in &new {
            let (hook, ns, pod, c) = (hook.clone(), ns.to_string(), name.to_string(), c.clone());
            let _ = tokio::task::spawn_blocking(move || hook(&ns, &pod, &c)).await;
        }
    }
    let mut st = lock(shared);
    let Some(mut pod) = st.store.get(res, ns, name) else { return not_found(res, name) };
    if !new.is_empty() {
        if !pod["status"].is_object() {
            pod["status"] = json!({});
        }
        let statuses = pod["status"]
            .as_object_mut()
            .expect("an object")
            .entry("ephemeralContainerStatuses")
            .or_insert_with(|| json!([]));
        if !statuses.is_array() {
            *statuses = json!([]);
        }
        let statuses = statuses.as_array_mut().expect("an array");
        for c in &new {
            statuses.retain(|s| s["name"] != c["name"]);
            statuses.push(json!({
                "name": c["name"],
                "state": {"running": {"startedAt": time::rfc3339(time::now())}},
                "lastState": {},
                "ready": false,
                "restartCount": 0,
                "image": c.get("image").cloned().unwrap_or(json!("")),
                "imageID": "",
                "containerID": format!("containerd://{}", store::random_hex(64)),
            }));
        }
        pod = st.store.update(res, ns, name, pod);
    }
    ok(200, pod)
}

// ---------------------------------------------------------------------------
// port-forward

/// The kubelet's pod sandbox id for a pod: stable per pod.
fn sandbox_id(pod: &Value) -> String {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let mut h = String::new();
    for (i, c) in uid.bytes().filter(u8::is_ascii_hexdigit).cycle().take(64).enumerate() {
        h.push(if i % 2 == 0 { c as char } else { char::from(b"0123456789abcdef"[(c as usize + i) % 16]) });
    }
    if h.len() < 64 {
        h = store::random_hex(64);
    }
    h
}

async fn portforward_request(
    shared: &Shared,
    parts: hyper::http::request::Parts,
    body: Incoming,
    path: &str,
    query: &[(String, String)],
) -> Response<Full<Bytes>> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let reply = |shared: &Shared, parts: &hyper::http::request::Parts, reply: Reply| {
        lock(shared).requests.push(record(parts, &[], reply.status));
        to_response(reply)
    };
    let (ns, name) = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name, "portforward"] => (ns.to_string(), name.to_string()),
        _ => return reply(shared, &parts, no_such_path()),
    };
    let res = discovery::by_path("", "v1", "pods").expect("pods are served");
    let (pod, connector) = {
        let st = lock(shared);
        if let Some(denied) = forbidden_reply(&st, "create", res, Some(&ns), Some(&name), Some("portforward")) {
            drop(st);
            return reply(shared, &parts, denied);
        }
        (st.store.get(res, &ns, &name), st.connectors.get(&(ns.clone(), name.clone())).cloned())
    };
    let Some(pod) = pod else { return reply(shared, &parts, not_found(res, &name)) };

    let upgrade = header_str(&parts.headers, header::UPGRADE).unwrap_or_default().to_ascii_lowercase();
    let protocols: Vec<String> = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .chain(parts.headers.get_all("x-stream-protocol-version").iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let sandbox = sandbox_id(&pod);

    if upgrade.starts_with("spdy/3.1") {
        // kubectl's fallback: SPDY after an HTTP upgrade.
        if !protocols.iter().any(|p| p == SPDY_PORTFORWARD) {
            return reply(
                shared,
                &parts,
                status_reply(
                    403,
                    "Forbidden",
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {protocols:?}, server supports [\"{SPDY_PORTFORWARD}\"]"
                    ),
                    Value::Null,
                ),
            );
        }
        lock(shared).requests.push(record(&parts, &[], 101));
        let req = Request::from_parts(parts, body);
        tokio::spawn(async move {
            if let Ok(upgraded) = hyper::upgrade::on(req).await {
                spdy::serve(TokioIo::new(upgraded), connector, sandbox).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert("x-stream-protocol-version", HeaderValue::from_static(SPDY_PORTFORWARD));
        return resp;
    }
    if upgrade != "websocket" {
        return reply(shared, &parts, bad_request("Upgrade request required".into()));
    }
    let chosen = if protocols.is_empty() || protocols.iter().any(|p| p == V4) {
        V4
    } else if protocols.iter().any(|p| p == SPDY_TUNNEL) {
        SPDY_TUNNEL
    } else {
        return reply(
            shared,
            &parts,
            bad_request(format!(
                "unable to upgrade connection: requested protocol(s) are not supported: {protocols:?}; supports [{V4} {SPDY_TUNNEL}]"
            )),
        );
    };
    let mut ports = Vec::new();
    for v in query.iter().filter(|(k, _)| k == "ports").flat_map(|(_, v)| v.split(',')) {
        match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => ports.push(p),
            _ => return reply(shared, &parts, bad_request(format!("unable to parse \"{v}\" as a port: invalid port"))),
        }
    }
    if chosen == V4 && ports.is_empty() {
        return reply(shared, &parts, bad_request("query parameter \"port\" is required".into()));
    }
    let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec()) else {
        return reply(shared, &parts, bad_request("missing Sec-WebSocket-Key".into()));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    lock(shared).requests.push(record(&parts, &[], 101));
    let req = Request::from_parts(parts, body);
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            if chosen == V4 {
                portforward::serve_v4(upgraded, ports, connector, sandbox).await;
            } else {
                portforward::serve_spdy_tunnel(upgraded, connector, sandbox).await;
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).expect("a valid accept key"));
    if !protocols.is_empty() {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(chosen));
    }
    resp
}

const V4: &str = "v4.channel.k8s.io";
const SPDY_PORTFORWARD: &str = "portforward.k8s.io";
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        assert_eq!(
            parse_query("labelSelector=app%3Ddemo%2Ctier+in+%28a%29&limit=500"),
            vec![
                ("labelSelector".to_string(), "app=demo,tier in (a)".to_string()),
                ("limit".to_string(), "500".to_string())
            ]
        );
    }

    #[test]
    fn strategic_merge_merges_lists_by_name() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        merge_patch(&mut pod, &json!({"spec": {"containers": [{"name": "a", "image": "y"}, {"name": "b"}]}}), true);
        assert_eq!(pod, json!({"spec": {"containers": [{"name": "a", "image": "y"}, {"name": "b"}]}}));
        merge_patch(&mut pod, &json!({"spec": {"containers": [{"name": "c"}]}}), false);
        assert_eq!(pod, json!({"spec": {"containers": [{"name": "c"}]}}));
    }

    #[test]
    fn json_patch_appends() {
        let mut pod = json!({"spec": {"ephemeralContainers": [{"name": "a"}]}});
        json_patch(&mut pod, &json!([{"op": "add", "path": "/spec/ephemeralContainers/-", "value": {"name": "b"}}]))
            .unwrap();
        assert_eq!(pod["spec"]["ephemeralContainers"][1]["name"], "b");
    }
}
