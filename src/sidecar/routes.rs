//! The HTTP routes: ingest, fetch, health and metrics, and the layer that counts and times
//! every request. Rejections are logged with party, table and reason only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::json;

use super::claims;
use super::config::{Party, TableName};
use super::error::{ApiError, Reason};
use super::jose::{self, JweForm, Refused, ServerKey};
use super::metrics::Metrics;
use super::record;
use super::store::Store;
use crate::cloak::Cloak;

/// Ingest bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

const INGEST: &str = "/v1/ingest/{table}";
const FETCH: &str = "/v1/records/{table}/{id}";
const HEALTHZ: &str = "/healthz";
const METRICS: &str = "/metrics";

/// What every handler shares.
pub struct AppState {
    pub cloak: Arc<Cloak>,
    pub store: Store,
    pub server_key: Arc<ServerKey>,
    pub parties: Arc<HashMap<String, Party>>,
    pub metrics: Metrics,
    /// Ingests decrypting at once.
    pub jose_slots: tokio::sync::Semaphore,
    /// Records' `jti`s, each accepted once.
    pub replay: claims::ReplayGuard,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(INGEST, post(ingest))
        .route(FETCH, get(fetch))
        .route(HEALTHZ, get(healthz))
        .route(METRICS, get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and times every request by route template and status.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = match request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
    {
        Some(INGEST) => INGEST,
        Some(FETCH) => FETCH,
        Some(HEALTHZ) => HEALTHZ,
        Some(METRICS) => METRICS,
        _ => "other",
    };
    let start = Instant::now();
    let response = next.run(request).await;
    let rejected = response.extensions().get::<Reason>().copied();
    let status = response.status().as_u16();
    state
        .metrics
        .observe(route, status, rejected, start.elapsed());
    response
}

/// Logs a refusal (party, table, reason; never values) and turns it into the response.
fn refuse(action: &str, party: Option<&str>, table: &str, error: ApiError) -> Response {
    let party = party.unwrap_or("-");
    let reason = error.reason.as_str();
    let status = error.reason.status().as_u16();
    tracing::warn!(party, table, reason, status, "sidecar: {action} refused");
    error.into_response()
}

/// A table name from the URL as it may appear in logs: short, no control characters.
fn loggable(table: &str) -> String {
    table
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect()
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The serialization an ingest's Content-Type announces.
fn jwe_form(headers: &HeaderMap) -> Result<JweForm, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let media = value.map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        Some("application/jose") => Ok(JweForm::Compact),
        Some("application/jose+json") => Ok(JweForm::Json),
        _ => Err(ApiError::new(
            Reason::ContentType,
            "Content-Type must be application/jose (compact JWE) or application/jose+json (JSON JWE)",
        )),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        Reason::TooLarge,
        format!("the body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] (announced or actual).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            if inner
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                ApiError::new(Reason::MalformedBody, "the body could not be read")
            }
        })
}

/// `POST /v1/ingest/{table}`: decrypt, verify, check permissions, encrypt PII, insert.
async fn ingest(
    State(state): State<Arc<AppState>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let log_table = loggable(&table);
    let refuse = |party: Option<&str>, error| refuse("ingest", party, &log_table, error);
    let form = match jwe_form(&headers) {
        Ok(form) => form,
        Err(e) => return refuse(None, e),
    };
    let body = match read_body(&headers, body).await {
        Ok(body) => body,
        Err(e) => return refuse(None, e),
    };
    if body.is_empty() {
        return refuse(
            None,
            ApiError::new(Reason::MalformedBody, "the body is empty"),
        );
    }
    // RSA decryption takes a few hundred microseconds: off the async workers, so the proxy's
    // sessions on the same runtime are not held up, and a few at a time (one per core is
    // all the CPU there is), so a burst of requests queues instead of spawning threads.
    let Ok(_permit) = state.jose_slots.acquire().await else {
        return refuse(None, ApiError::internal("the sidecar is shutting down"));
    };
    let (key, parties) = (state.server_key.clone(), state.parties.clone());
    let opened =
        tokio::task::spawn_blocking(move || jose::open_ingest(&body, form, &key, &parties)).await;
    let ingest = match opened {
        Ok(Ok(ingest)) => ingest,
        Ok(Err(Refused { party, error })) => return refuse(party.as_deref(), error),
        Err(_) => {
            return refuse(
                None,
                ApiError::internal("the request could not be processed"),
            )
        }
    };
    let party = ingest.party.as_str();
    let mut record = ingest.record;
    let require_jti = state.parties.get(party).is_some_and(|p| p.require_jti);
    let now = now_seconds();
    let claims = match claims::take(&mut record, (party, require_jti), now) {
        Ok(claims) => claims,
        Err(e) => return refuse(Some(party), e),
    };
    // Held while the record is stored, so that a copy posted meanwhile is refused too;
    // released if it is not stored, so that the party can send it again.
    let jti = claims.jti.as_deref().zip(claims.exp);
    if let Some((jti, exp)) = jti {
        if let Err(e) = state.replay.reserve(party, jti, exp, now) {
            return refuse(Some(party), e);
        }
    }
    match store_record(&state, party, &table, record).await {
        Ok(id) => {
            tracing::debug!(party, table = %log_table, "sidecar: record stored");
            (StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response()
        }
        Err(e) => {
            if let Some((jti, _)) = jti {
                state.replay.release(party, jti);
            }
            refuse(Some(party), e)
        }
    }
}

/// The party's permission for `table`, by the URL's table name.
fn allowed<'p>(
    party: &'p Party,
    table: &str,
) -> Result<(TableName, &'p std::collections::BTreeSet<String>), ApiError> {
    let forbidden = || {
        let message = format!("party {} may not use table {}", party.id, loggable(table));
        ApiError::new(Reason::TableNotAllowed, message)
    };
    let name = TableName::parse(table).ok_or_else(forbidden)?;
    let columns = party.tables.get(&name).ok_or_else(forbidden)?;
    Ok((name, columns))
}

async fn store_record(
    state: &AppState,
    party_id: &str,
    table: &str,
    record: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, ApiError> {
    let party = state
        .parties
        .get(party_id)
        .ok_or_else(|| ApiError::internal("the party vanished"))?;
    let (name, columns) = allowed(party, table)?;
    let info = state.store.table(&name).await?;
    let insert = record::prepare_insert(record, &info, columns, &state.cloak)?;
    let names: Vec<&str> = insert.columns.iter().map(String::as_str).collect();
    let key = state.store.insert(&info, &names, insert.values).await?;
    record::key_json(&state.cloak, &info, key)
}

/// `GET /v1/records/{table}/{id}`: the row, restricted to the party's columns plus the key,
/// as a JWE encrypted to the party.
async fn fetch(
    State(state): State<Arc<AppState>>,
    Path((table, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let log_table = loggable(&table);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let party = match jose::verify_bearer(authorization, &state.parties, now_seconds()) {
        Ok(party) => party,
        Err(Refused { party, error }) => {
            return refuse("fetch", party.as_deref(), &log_table, error)
        }
    };
    match fetch_record(&state, party, &table, &id).await {
        Ok(jwe) => {
            let content_type = HeaderValue::from_static("application/jose");
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], jwe).into_response()
        }
        Err(e) => refuse("fetch", Some(&party.id), &log_table, e),
    }
}

async fn fetch_record(
    state: &AppState,
    party: &Party,
    table: &str,
    id: &str,
) -> Result<String, ApiError> {
    let (name, allowed) = allowed(party, table)?;
    let info = state.store.table(&name).await?;
    let key = record::parse_id(&state.cloak, &info, id)?;
    let mut columns: Vec<&str> = info.primary_key.iter().map(String::as_str).collect();
    for column in &info.columns {
        if allowed.contains(&column.name) && !columns.contains(&column.name.as_str()) {
            columns.push(&column.name);
        }
    }
    let Some(texts) = state.store.select(&info, &columns, key).await? else {
        return Err(ApiError::new(
            Reason::NotFound,
            format!("no record of {name} has that id"),
        ));
    };
    let row = record::row_json(&state.cloak, &info, &columns, texts)?;
    let plaintext = zeroize::Zeroizing::new(serde_json::Value::Object(row).to_string());
    jose::encrypt_response(party, plaintext.as_bytes())
}

/// `GET /healthz`: 200 when the upstream answers.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.store.healthy().await {
        axum::Json(json!({ "status": "ok" })).into_response()
    } else {
        let body = axum::Json(json!({ "error": "the database is not reachable" }));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4");
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    ApiError::new(Reason::NotFound, "no such route").into_response()
}
