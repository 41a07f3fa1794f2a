//! The todo resource: its JSON shapes, validation and handlers.

use serde::{Deserialize, Serialize};
use verge_sdk::http::header::{ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION};
use verge_sdk::http::{HeaderValue, StatusCode};
use verge_sdk::kv::{Entry, Kv};
use verge_sdk::{Bytes, Env, Error, Params, Request, RequestExt, Response, json};

use crate::time;

/// Longest title accepted, in characters.
const MAX_TITLE: usize = 200;
/// Page size when `limit` is absent, and the largest allowed.
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
/// Keys of todos start with this; the id counter lives outside it.
const PREFIX: &str = "todo:";
const NEXT_ID: &str = "meta:next-id";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Todo {
    id: String,
    title: String,
    done: bool,
    created_at: String,
    updated_at: String,
}

/// `POST /todos`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTodo {
    title: String,
    #[serde(default)]
    done: bool,
}

/// `PUT /todos/:id`: every field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replace {
    title: String,
    done: bool,
}

/// `PATCH /todos/:id`: any fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    title: Option<String>,
    done: Option<bool>,
}

fn todos(env: &Env) -> Result<Kv, Error> {
    env.kv("TODOS")
}

/// Zero-padded, so that key order is creation order.
fn key(id: u64) -> String {
    format!("{PREFIX}{id:012}")
}

/// Ids are decimal numbers; anything else cannot name a todo.
fn parse_id(params: &Params) -> Result<u64, Error> {
    let id = params.get("id").unwrap_or_default();
    id.parse()
        .map_err(|_| Error::not_found(format!("no todo {id}")))
}

fn check_title(title: &str) -> Result<String, Error> {
    let title = title.trim();
    if title.is_empty() {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "`title` must not be empty",
        ));
    }
    if title.chars().count() > MAX_TITLE {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("`title` is longer than {MAX_TITLE} characters"),
        ));
    }
    Ok(title.to_string())
}

fn etag(generation: u64) -> String {
    format!("\"{generation}\"")
}

/// Whether an `If-Match` / `If-None-Match` list names `tag` (or is `*`).
fn names(header: &HeaderValue, tag: &str) -> bool {
    header.to_str().is_ok_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
    })
}

/// `response` with the ETag of `generation`.
fn with_etag(mut response: Response, generation: u64) -> Result<Response, Error> {
    response.headers_mut().insert(
        ETAG,
        HeaderValue::from_str(&etag(generation)).map_err(Error::internal)?,
    );
    Ok(response)
}

/// A todo as a response, with its ETag.
fn respond(status: u16, todo: &Todo, generation: u64) -> Result<Response, Error> {
    with_etag(json(status, todo)?, generation)
}

/// Reads todo `id`, or 404.
fn load(kv: &Kv, id: u64) -> Result<(Todo, Entry), Error> {
    let entry = kv
        .get(key(id))
        .entry()?
        .ok_or_else(|| Error::not_found(format!("no todo {id}")))?;
    let todo = entry.json()?;
    Ok((todo, entry))
}

/// 412 unless `If-Match` (when sent) names the entry's current ETag.
fn check_if_match(req: &Request, entry: &Entry) -> Result<(), Error> {
    match req.headers().get(IF_MATCH) {
        Some(header) if !names(header, &etag(entry.generation)) => {
            Err(Error::precondition_failed(format!(
                "the todo changed: its ETag is now {}; fetch it again",
                etag(entry.generation)
            )))
        }
        _ => Ok(()),
    }
}

/// Applies `change` to todo `id` if `If-Match` (when sent) still holds,
/// and writes it back only if nothing else wrote it in between: a
/// concurrent write is a 412, like a stale `If-Match`.
fn modify(
    req: &Request,
    id: u64,
    env: &Env,
    change: impl FnOnce(Todo) -> Todo,
) -> Result<Response, Error> {
    let kv = todos(env)?;
    let (todo, entry) = load(&kv, id)?;
    check_if_match(req, &entry)?;
    let todo = Todo {
        updated_at: time::now(),
        ..change(todo)
    };
    let generation = kv
        .put_json(key(id), &todo)
        .if_generation(entry.generation)
        .execute()?;
    respond(200, &todo, generation)
}

pub async fn create(req: Request, _: Params, env: Env) -> Result<Response, Error> {
    let new: NewTodo = req.json()?;
    let title = check_title(&new.title)?;
    let kv = todos(&env)?;
    // A negative counter could only be a hand-edited store.
    let n: u64 = kv
        .increment(NEXT_ID, 1)?
        .try_into()
        .map_err(Error::internal)?;
    let now = time::now();
    let todo = Todo {
        id: n.to_string(),
        title,
        done: new.done,
        created_at: now.clone(),
        updated_at: now,
    };
    let generation = kv.put_json(key(n), &todo).if_absent().execute()?;
    verge_sdk::info!("created todo {n}");
    let mut response = respond(201, &todo, generation)?;
    response.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(&format!("/todos/{n}")).map_err(Error::internal)?,
    );
    Ok(response)
}

#[derive(Serialize)]
struct Page {
    items: Vec<Todo>,
    cursor: Option<String>,
}

pub async fn list(req: Request, _: Params, env: Env) -> Result<Response, Error> {
    let limit = req.query_as::<u32>("limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::bad_request(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let kv = todos(&env)?;
    let mut listing = kv.list().prefix(PREFIX).limit(limit);
    if let Some(cursor) = req.query("cursor") {
        listing = listing.cursor(cursor);
    }
    let page = listing.page().map_err(|e| match e {
        verge_sdk::KvError::BadRequest(why) => Error::bad_request(format!("`cursor`: {why}")),
        e => e.into(),
    })?;
    let keys: Vec<&str> = page.keys.iter().map(|k| k.name.as_str()).collect();
    let mut items = Vec::with_capacity(keys.len());
    if !keys.is_empty() {
        // A todo deleted between the listing and this read is skipped.
        for entry in kv.get_many(&keys)?.into_iter().flatten() {
            items.push(entry.json()?);
        }
    }
    json(
        200,
        &Page {
            items,
            cursor: page.cursor,
        },
    )
}

pub async fn show(req: Request, params: Params, env: Env) -> Result<Response, Error> {
    let id = parse_id(&params)?;
    let (todo, entry) = load(&todos(&env)?, id)?;
    if let Some(header) = req.headers().get(IF_NONE_MATCH)
        && names(header, &etag(entry.generation))
    {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return with_etag(response, entry.generation);
    }
    respond(200, &todo, entry.generation)
}

pub async fn replace(req: Request, params: Params, env: Env) -> Result<Response, Error> {
    let id = parse_id(&params)?;
    let body: Replace = req.json()?;
    let title = check_title(&body.title)?;
    modify(&req, id, &env, |todo| Todo {
        title,
        done: body.done,
        ..todo
    })
}

pub async fn update(req: Request, params: Params, env: Env) -> Result<Response, Error> {
    let id = parse_id(&params)?;
    let patch: Patch = req.json()?;
    let title = patch.title.as_deref().map(check_title).transpose()?;
    modify(&req, id, &env, |todo| Todo {
        title: title.unwrap_or(todo.title),
        done: patch.done.unwrap_or(todo.done),
        ..todo
    })
}

pub async fn remove(req: Request, params: Params, env: Env) -> Result<Response, Error> {
    let id = parse_id(&params)?;
    let kv = todos(&env)?;
    let (_, entry) = load(&kv, id)?;
    // KV deletes are unconditional: a write landing between this check and
    // the delete is deleted with it.
    check_if_match(&req, &entry)?;
    kv.delete(key(id))?;
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}
