//! Queries: filters on tags and reported properties, IN, paging, GROUP BY counts and syntax errors. A real hub's
//! query results lag twin writes, so every check waits until the expected result shows.

use std::time::Duration;

use iothub_service::Etag;
use iothub_service::proto::twin::Twin;
use serde_json::{Value, json};

use super::{PATIENCE, failure};
use crate::run::{Run, eventually, skeleton};

/// Registers `count` devices tagged with this run's id and `group` alternating `a`/`b`; device `i` reports
/// `temp` = 10 * i through the service-visible reported section by a connected device.
async fn fleet(run: &Run, count: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..count {
        let (id, cs) = run.create_device(&format!("q{i}")).await?;
        let tags = json!({"conf": run.id("fleet"), "group": if i % 2 == 0 { "a" } else { "b" }, "index": i});
        run.service()
            .twins()
            .update_twin(&id, &Twin::tags_patch(tags.as_object().cloned().unwrap_or_default()), Etag::Any)
            .await?;
        let device = run.device(&cs)?.connect().await?;
        device.update_reported(&json!({"temp": 10 * i})).await?;
        device.close().await;
        ids.push(id);
    }
    Ok(ids)
}

fn sorted_ids(items: &[Value]) -> Vec<Value> {
    let mut ids: Vec<Value> = items.iter().map(|t| t["deviceId"].clone()).collect();
    ids.sort_by_key(|v| v.as_str().unwrap_or_default().to_owned());
    ids
}

/// Runs `text` until it returns `expected` items (a real hub is eventually consistent).
async fn query_until(run: &Run, text: &str, expected: usize) -> anyhow::Result<Vec<Value>> {
    eventually(PATIENCE, Duration::from_secs(1), || async {
        let items = run.service().query().raw(text).collect_all().await?;
        Ok((items.len() == expected).then_some(items))
    })
    .await
}

pub(super) async fn filters(run: &Run) -> anyhow::Result<()> {
    let ids = fleet(run, 4).await?;
    let conf = run.id("fleet");
    let by_tag =
        query_until(run, &format!("SELECT * FROM devices WHERE tags.conf = '{conf}' AND tags.[[group]] = 'a'"), 2)
            .await?;
    run.observe("tags.[[group]] = 'a'", sorted_ids(&by_tag));
    run.observe("twin item shape", skeleton(&by_tag[0]));
    let hot = query_until(
        run,
        &format!("SELECT * FROM devices WHERE tags.conf = '{conf}' AND properties.reported.temp >= 20"),
        2,
    )
    .await?;
    run.observe("properties.reported.temp >= 20", sorted_ids(&hot));
    let listed = format!("'{}', '{}'", ids[1], ids[3]);
    let in_list = query_until(run, &format!("SELECT * FROM devices WHERE deviceId IN [{listed}]"), 2).await?;
    run.observe("deviceId IN [..]", sorted_ids(&in_list));
    let missing = run
        .service()
        .query()
        .raw(&format!("SELECT * FROM devices WHERE tags.conf = '{conf}' AND tags.nothing != 1"))
        .collect_all()
        .await?;
    run.observe("a missing property never matches, not even !=", missing.len());
    let projected = query_until(
        run,
        &format!("SELECT deviceId, tags.index AS i FROM devices WHERE tags.conf = '{conf}' AND tags.index = 2"),
        1,
    )
    .await?;
    run.observe("projection", &projected);
    Ok(())
}

pub(super) async fn paging(run: &Run) -> anyhow::Result<()> {
    fleet(run, 5).await?;
    let text = format!("SELECT * FROM devices WHERE tags.conf = '{}'", run.id("fleet"));
    query_until(run, &text, 5).await?;
    let mut pager = run.service().query().twins(&text).page_size(2);
    let mut pages = Vec::new();
    while let Some(page) = pager.next_page().await? {
        pages.push(json!({"items": page.items.len(), "itemType": page.item_type}));
    }
    run.observe("pages of 2", pages);
    Ok(())
}

pub(super) async fn group_by(run: &Run) -> anyhow::Result<()> {
    fleet(run, 5).await?;
    let conf = run.id("fleet");
    query_until(run, &format!("SELECT * FROM devices WHERE tags.conf = '{conf}'"), 5).await?;
    let text = format!(
        "SELECT tags.[[group]] AS g, COUNT() AS n FROM devices WHERE tags.conf = '{conf}' GROUP BY tags.[[group]]"
    );
    let mut rows = run.service().query().raw(&text).collect_all().await?;
    rows.sort_by_key(|r| r["g"].as_str().unwrap_or_default().to_owned());
    run.observe("count by group", rows);
    let total = run
        .service()
        .query()
        .raw(&format!("SELECT COUNT() AS total FROM devices WHERE tags.conf = '{conf}'"))
        .collect_all()
        .await?;
    run.observe("count", total);
    Ok(())
}

pub(super) async fn syntax_error(run: &Run) -> anyhow::Result<()> {
    for (label, text) in [
        ("unfinished WHERE", "SELECT * FROM devices WHERE"),
        ("unknown collection", "SELECT * FROM gadgets"),
        ("unclosed string", "SELECT * FROM devices WHERE tags.a = 'x"),
    ] {
        run.observe(label, failure(run.service().query().raw(text).collect_all().await));
    }
    Ok(())
}
