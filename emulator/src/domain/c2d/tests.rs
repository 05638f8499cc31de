use super::*;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("time")
}

const DEVICE: DeviceRef<'static> = DeviceRef { device_id: "d1", generation_id: "g1" };

fn message(id: &str, ack: Ack) -> Message {
    Message { message_id: Some(id.into()), ack, body: id.as_bytes().to_vec(), ..Message::default() }
}

fn statuses(ended: &[Ended]) -> Vec<Option<FeedbackStatus>> {
    ended.iter().map(|e| e.feedback.as_ref().map(|f| f.status)).collect()
}

#[test]
fn messages_are_handed_out_in_order_and_completed_by_their_lock() {
    let mut queue = DeviceQueue::default();
    queue.enqueue(1, message("a", Ack::Full), t(0)).expect("a");
    queue.enqueue(2, message("b", Ack::None), t(0)).expect("b");
    let first = queue.take_next("lock-a".into(), t(1)).expect("a waits");
    assert_eq!((first.sequence, first.delivery_count), (1, 1));
    assert_eq!(queue.take_next("lock-b".into(), t(1)).map(|m| m.sequence), Some(2), "the next one is free");
    assert!(queue.take_next("lock-c".into(), t(1)).is_none(), "both are held");
    let ended = queue.settle("lock-a", Settlement::Complete, &DEVICE, t(2)).expect("held").expect("ended");
    let record = ended.feedback.expect("full asks for success");
    assert_eq!(
        (record.status, record.original_message_id.as_str(), record.device_generation_id.as_str()),
        (FeedbackStatus::Success, "a", "g1")
    );
    assert_eq!(queue.settle("lock-a", Settlement::Complete, &DEVICE, t(2)), Err(C2dError::LockLost("lock-a".into())));
    let ended = queue.settle("lock-b", Settlement::Reject, &DEVICE, t(2)).expect("held").expect("ended");
    assert_eq!(ended.feedback, None, "ack none asks for nothing");
    assert!(queue.is_empty());
}

#[test]
fn fifty_messages_at_most_and_bodies_up_to_64_kb() {
    let mut queue = DeviceQueue::default();
    for i in 0..MAX_QUEUED as u64 {
        queue.enqueue(i, message("m", Ack::None), t(0)).expect("room");
    }
    assert_eq!(queue.enqueue(99, message("m", Ack::None), t(0)).err(), Some(C2dError::QueueFull));
    let big = Message { body: vec![0; MAX_MESSAGE_BYTES + 1], ..Message::default() };
    assert_eq!(DeviceQueue::default().enqueue(1, big, t(0)).err(), Some(C2dError::TooLarge(MAX_MESSAGE_BYTES + 1)));
}

#[test]
fn abandoned_and_unlocked_messages_come_back_until_the_delivery_count_runs_out() {
    let mut queue = DeviceQueue::default();
    queue.enqueue(1, message("a", Ack::Negative), t(0)).expect("a");
    for delivery in 1..MAX_DELIVERY_COUNT {
        let token = format!("l{delivery}");
        assert_eq!(queue.take_next(token.clone(), t(0)).map(|m| m.delivery_count), Some(delivery));
        if delivery % 2 == 0 {
            assert_eq!(queue.settle(&token, Settlement::Abandon, &DEVICE, t(0)), Ok(None), "abandoned: waits again");
        } else {
            // Not settled: the lock runs out after a minute and the message waits again.
            let (ended, released) = queue.expire(&DEVICE, later(t(0), LOCK));
            assert!(ended.is_empty() && released);
        }
    }
    queue.take_next("last".into(), t(0)).expect("the tenth delivery");
    let ended = queue.settle("last", Settlement::Abandon, &DEVICE, t(1)).expect("held").expect("dead-lettered");
    assert_eq!(ended.feedback.map(|f| f.status), Some(FeedbackStatus::DeliveryCountExceeded));
    assert!(queue.is_empty());
}

#[test]
fn messages_expire_at_their_own_time_or_after_the_default_ttl() {
    let mut queue = DeviceQueue::default();
    let soon = Message { expiry: Some(t(10)), ..message("soon", Ack::Full) };
    let far = Message { expiry: Some(t(10 * 24 * 3600)), ..message("far", Ack::Positive) };
    queue.enqueue(1, soon, t(0)).expect("soon");
    queue.enqueue(2, message("default", Ack::Negative), t(0)).expect("default");
    queue.enqueue(3, far, t(0)).expect("far");
    assert_eq!(queue.get(3).map(|m| m.expires), Some(later(t(0), MAX_TTL)), "cut to the longest TTL");
    assert_eq!(queue.next_deadline(), Some(t(10)));
    let (ended, _) = queue.expire(&DEVICE, t(10));
    assert_eq!(statuses(&ended), [Some(FeedbackStatus::Expired)]);
    let (ended, _) = queue.expire(&DEVICE, later(t(0), DEFAULT_TTL));
    assert_eq!(statuses(&ended), [Some(FeedbackStatus::Expired)]);
    let (ended, _) = queue.expire(&DEVICE, later(t(0), MAX_TTL));
    assert_eq!(statuses(&ended), [None], "positive asks only for completions");
}

#[test]
fn a_purge_empties_the_queue_with_feedback_where_asked() {
    let mut queue = DeviceQueue::default();
    queue.enqueue(1, message("a", Ack::Full), t(0)).expect("a");
    queue.enqueue(2, message("b", Ack::Positive), t(0)).expect("b");
    queue.take_next("held".into(), t(0));
    assert_eq!(statuses(&queue.purge(&DEVICE, t(1))), [Some(FeedbackStatus::Purged), None]);
    assert!(queue.is_empty() && queue.next_deadline().is_none());
}

#[test]
fn feedback_travels_in_batches_that_come_back_until_completed() {
    let record = |sequence: u64| FeedbackRecord {
        sequence,
        original_message_id: format!("m{sequence}"),
        device_id: "d1".into(),
        device_generation_id: "g1".into(),
        enqueued_time: t(0),
        status: FeedbackStatus::Success,
    };
    let mut feedback = FeedbackQueue::default();
    assert!(feedback.take("t0".into(), t(0)).is_none(), "nothing to read");
    for sequence in 1..=3 {
        assert!(feedback.push(record(sequence)).is_empty());
    }
    assert_eq!(feedback.take("t1".into(), t(0)).map(|b| b.records.len()), Some(3));
    feedback.push(record(4));
    assert!(feedback.abandon("t1"));
    let again = feedback.take("t2".into(), t(0)).expect("back first in line");
    assert_eq!(again.records.iter().map(|r| r.sequence).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(!feedback.expire_locks(t(59)));
    assert!(feedback.expire_locks(t(60)), "an unsettled batch comes back when its lock runs out");
    feedback.take("t3".into(), t(60)).expect("again");
    assert_eq!(feedback.complete("t3"), Some(vec![1, 2, 3, 4]));
    assert!(feedback.is_empty());
}

#[test]
fn ack_modes_choose_the_outcomes_reported() {
    use FeedbackStatus::*;
    let wants = |ack: Ack| [Success, Expired, DeliveryCountExceeded, Rejected, Purged].map(|s| ack.wants(s));
    assert_eq!(wants(Ack::None), [false; 5]);
    assert_eq!(wants(Ack::Positive), [true, false, false, false, false]);
    assert_eq!(wants(Ack::Negative), [false, true, true, true, true]);
    assert_eq!(wants(Ack::Full), [true; 5]);
    assert_eq!(Ack::parse("FULL"), Some(Ack::Full));
    assert_eq!(Ack::parse("sometimes"), None);
}
