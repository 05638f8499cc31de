//! SAS authorization of the service API: every failure is a 401 in the hub's format, and each policy gets
//! exactly its permissions.

mod common;

use common::{API, expect_error, start, unix_now};
use iothub_proto::generate_token;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn every_sas_failure_is_a_401_in_the_hubs_format() {
    let hub = start().await;
    hub.create_device("d1").await;
    let host = hub.emulator.host_name().to_owned();
    let owner_key = hub.emulator.hub().policies().get("iothubowner").expect("owner").primary_key.clone();
    let other_key = hub.emulator.hub().policies().get("service").expect("service").primary_key.clone();
    let device_key = hub.emulator.hub().get_device("d1").expect("d1").authentication.primary_key.clone().expect("key");
    let later = unix_now() + 600;
    let valid = generate_token(&host, &owner_key, Some("iothubowner"), later).expect("token");

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("not a SAS token", Some("Bearer abc.def.ghi".into())),
        ("SAS without a signature", Some(format!("SharedAccessSignature sr={host}&se={later}&skn=iothubowner"))),
        ("SAS with a non-numeric expiry", Some(valid.replace(&format!("se={later}"), "se=soon"))),
        ("garbage signature", Some(format!("SharedAccessSignature sr={host}&sig=%%%&se={later}&skn=iothubowner"))),
        (
            "signed with another policy's key",
            Some(generate_token(&host, &other_key, Some("iothubowner"), later).expect("t")),
        ),
        ("expired", Some(generate_token(&host, &owner_key, Some("iothubowner"), unix_now() - 1).expect("t"))),
        ("expiry tampered after signing", Some(valid.replace(&format!("se={later}"), &format!("se={}", later + 1)))),
        (
            "wrong sr (another hub)",
            Some(generate_token("otherhub.azure-devices.net", &owner_key, Some("iothubowner"), later).expect("t")),
        ),
        (
            "sr of another device",
            Some(generate_token(&format!("{host}/devices/d2"), &owner_key, Some("iothubowner"), later).expect("t")),
        ),
        ("unknown policy", Some(generate_token(&host, &owner_key, Some("nobody"), later).expect("t"))),
        ("policy without the permission", Some(generate_token(&host, &other_key, Some("service"), later).expect("t"))),
        (
            "device token on the service API",
            Some(generate_token(&format!("{host}/devices/d1"), &device_key, None, later).expect("t")),
        ),
        ("oversized header", Some(format!("SharedAccessSignature sr={}&sig=x&se=1", "a".repeat(5000)))),
    ];
    for (what, header) in cases {
        let mut request = hub.http.get(hub.url(&format!("/devices/d1?{API}")));
        if let Some(value) = header {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        let message = expect_error(response, StatusCode::UNAUTHORIZED, "IotHubUnauthorizedAccess").await;
        assert!(!message.contains(&owner_key) && !message.contains(&device_key), "no secret in the answer ({what})");
    }
    // Sanity: the same request with the valid token works, so the refusals above were for their reasons.
    let response =
        hub.http.get(hub.url(&format!("/devices/d1?{API}"))).header("Authorization", valid).send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn node_and_python_token_encodings_are_both_accepted() {
    let hub = start().await;
    let host = hub.emulator.host_name().to_owned();
    let key = hub.emulator.hub().policies().get("iothubowner").expect("owner").primary_key.clone();
    let token = generate_token(&host, &key, Some("iothubowner"), unix_now() + 600).expect("token");
    // Python service SDK: literal '/' in sig, and `skn` after `se`; Node: `skn` before `se`.
    let fields: Vec<&str> = token.trim_start_matches("SharedAccessSignature ").split('&').collect();
    let (sr, sig, se, skn) = (fields[0], fields[1], fields[2], fields[3]);
    let python = format!("SharedAccessSignature {sr}&{}&{se}&{skn}", sig.replace("%2F", "/"));
    let node = format!("SharedAccessSignature {sr}&{sig}&{skn}&{se}");
    for token in [python, node] {
        let response = hub
            .http
            .get(hub.url(&format!("/devices?{API}")))
            .header("Authorization", &token)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK, "{token}");
    }
}

#[tokio::test]
async fn each_policy_gets_exactly_its_permissions() {
    let hub = start().await;
    hub.create_device("d1").await;
    // (policy, may read the registry, may write it, may read twins)
    let table = [
        ("iothubowner", true, true, true),
        ("registryReadWrite", true, true, true),
        ("registryRead", true, false, true),
        ("service", false, false, true),
        ("device", false, false, false),
    ];
    for (policy, read, write, twin) in table {
        let token = hub.policy_token(policy);
        let status = |ok: bool, success: StatusCode| if ok { success } else { StatusCode::UNAUTHORIZED };
        let send = |method: Method, path: &str| hub.request_as(&token, method, path);
        let get = send(Method::GET, "/devices/d1").send().await.expect("send");
        assert_eq!(get.status(), status(read, StatusCode::OK), "{policy} GET /devices/d1");
        let stats = send(Method::GET, "/statistics/devices").send().await.expect("send");
        assert_eq!(stats.status(), status(read, StatusCode::OK), "{policy} GET /statistics/devices");
        let put = send(Method::PUT, &format!("/devices/new-{policy}")).json(&json!({})).send().await.expect("send");
        assert_eq!(put.status(), status(write, StatusCode::OK), "{policy} PUT");
        let twin_get = send(Method::GET, "/twins/d1").send().await.expect("send");
        assert_eq!(twin_get.status(), status(twin, StatusCode::OK), "{policy} GET /twins");
        let delete =
            send(Method::DELETE, "/devices/d1").header("If-Match", "\"none-such\"").send().await.expect("send");
        let expected = if write { StatusCode::PRECONDITION_FAILED } else { StatusCode::UNAUTHORIZED };
        assert_eq!(delete.status(), expected, "{policy} DELETE (authorization comes before the etag check)");
    }
}

#[tokio::test]
async fn a_token_scoped_to_one_device_reaches_only_that_device() {
    let hub = start().await;
    hub.create_device("d1").await;
    hub.create_device("d10").await;
    let host = hub.emulator.host_name().to_owned();
    let key = hub.emulator.hub().policies().get("registryRead").expect("policy").primary_key.clone();
    let token =
        generate_token(&format!("{host}/devices/d1"), &key, Some("registryRead"), unix_now() + 600).expect("token");
    let own = hub.request_as(&token, Method::GET, "/devices/d1").send().await.expect("send");
    assert_eq!(own.status(), StatusCode::OK);
    for path in ["/devices/d10", "/devices"] {
        let other = hub.request_as(&token, Method::GET, path).send().await.expect("send");
        expect_error(other, StatusCode::UNAUTHORIZED, "IotHubUnauthorizedAccess").await;
    }
}
