// amqp091-go: the queue types and plugins of issue 15 -- stream queues over
// AMQP 0-9-1 (declare rules, x-stream-offset first/last/next/number/
// timestamp, the x-stream-offset header), the quorum delivery limit, the
// consumer timeout, the delayed-message and consistent-hash exchanges.
// Checked against RabbitMQ 3.10.8 with CLIENTS_TARGET=rabbitmq, which skips
// what RabbitMQ 3.10 lacks.
package compat

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func onRabbitMQ() bool { return os.Getenv("CLIENTS_TARGET") == "rabbitmq" }

func lepusOnly(t *testing.T, why string) {
	t.Helper()
	if onRabbitMQ() {
		t.Skip("RabbitMQ 3.10 lacks this: " + why)
	}
}

func declareStream(t *testing.T, conn *amqp.Connection, prefix string) string {
	t.Helper()
	name := unique(prefix)
	deleteLater(t, "queue", name)
	ch := channel(t, conn)
	_, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-queue-type": "stream"})
	must(t, err, "stream declare")
	_ = ch.Close()
	return name
}

// publishEach publishes one confirmed message at a time (one stream chunk
// each on RabbitMQ, so `last` is one message there as on Lepus).
func publishEach(t *testing.T, conn *amqp.Connection, queue string, bodies ...string) {
	t.Helper()
	ch := confirmChannel(t, conn)
	for _, b := range bodies {
		publishConfirmed(t, ch, "", queue, false, amqp.Publishing{Body: []byte(b)})
	}
	_ = ch.Close()
}

// streamConsumer consumes with prefetch 100 and manual acks from offset
// (nil: no x-stream-offset argument).
func streamConsumer(t *testing.T, conn *amqp.Connection, queue string, offset interface{}) <-chan amqp.Delivery {
	t.Helper()
	ch := channel(t, conn)
	must(t, ch.Qos(100, 0, false), "basic.qos")
	args := amqp.Table{}
	if offset != nil {
		args["x-stream-offset"] = offset
	}
	msgs, err := ch.Consume(queue, "", false, false, false, false, args)
	must(t, err, "consume")
	return msgs
}

// takeOffsets receives n deliveries, acks them, and renders each as
// "body@offset", checking the header is an int64 (field type 'l').
func takeOffsets(t *testing.T, msgs <-chan amqp.Delivery, n int, what string) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		d := recv(t, msgs, what)
		off, ok := d.Headers["x-stream-offset"].(int64)
		if !ok {
			t.Fatalf("%s: x-stream-offset %#v (%T), want an int64", what, d.Headers["x-stream-offset"], d.Headers["x-stream-offset"])
		}
		must(t, d.Ack(false), "ack")
		out = append(out, fmt.Sprintf("%s@%d", d.Body, off))
	}
	return out
}

func seq(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func at(bodies []string, first int) []string {
	var out []string
	for i, b := range bodies {
		out = append(out, fmt.Sprintf("%s@%d", b, first+i))
	}
	return out
}

func TestStreamDeclareRules(t *testing.T) {
	conn := dial(t)
	name := unique("stream-rules")
	deleteLater(t, "queue", name)
	stream := amqp.Table{"x-queue-type": "stream"}
	cases := []struct {
		durable, autoDelete, exclusive bool
		args                           amqp.Table
		text                           string
	}{
		{false, false, false, stream, "invalid property 'non-durable' for queue '%s' in vhost '/'"},
		{true, false, true, stream, "invalid property 'exclusive-owner' for queue '%s' in vhost '/'"},
		{true, true, false, stream, "invalid property 'auto-delete' for queue '%s' in vhost '/'"},
		{true, false, false, amqp.Table{"x-queue-type": "stream", "x-max-priority": int32(5)},
			"invalid arg 'x-max-priority' for queue '%s' in vhost '/' of queue type rabbit_stream_queue"},
	}
	for _, c := range cases {
		ch := channel(t, conn)
		_, err := ch.QueueDeclare(name, c.durable, c.autoDelete, c.exclusive, false, c.args)
		var aerr *amqp.Error
		want := "PRECONDITION_FAILED - " + fmt.Sprintf(c.text, name)
		if !errors.As(err, &aerr) || aerr.Code != 406 || aerr.Reason != want {
			t.Fatalf("declare %+v: got %v, want 406 %q", c, err, want)
		}
	}
	ch := channel(t, conn)
	args := amqp.Table{"x-queue-type": "stream", "x-max-length-bytes": int64(10_000_000), "x-max-age": "1h",
		"x-stream-max-segment-size-bytes": int32(1_000_000)}
	_, err := ch.QueueDeclare(name, true, false, false, false, args)
	must(t, err, "stream declare with retention")
	_, err = ch.QueueDeclare(name, true, false, false, false, args)
	must(t, err, "equivalent redeclare")
}

func TestStreamOffsetFirstAndHeader(t *testing.T) {
	conn := dial(t)
	queue := declareStream(t, conn, "stream-first")
	bodies := seq("m", 0, 10)
	publishEach(t, conn, queue, bodies...)
	equal(t, takeOffsets(t, streamConsumer(t, conn, queue, "first"), 10, "from first"), at(bodies, 0), "first")
	// Nothing was consumed away: a second consumer sees the same.
	equal(t, takeOffsets(t, streamConsumer(t, conn, queue, "first"), 10, "again"), at(bodies, 0), "first again")
}

func TestStreamOffsetNumeric(t *testing.T) {
	conn := dial(t)
	queue := declareStream(t, conn, "stream-num")
	bodies := seq("m", 0, 10)
	publishEach(t, conn, queue, bodies...)
	for _, offset := range []interface{}{int64(5), int32(5), int16(5)} {
		got := takeOffsets(t, streamConsumer(t, conn, queue, offset), 5, fmt.Sprintf("from %T 5", offset))
		equal(t, got, at(bodies[5:], 5), fmt.Sprintf("offset %T", offset))
	}
}

func TestStreamOffsetLast(t *testing.T) {
	conn := dial(t)
	queue := declareStream(t, conn, "stream-last")
	publishEach(t, conn, queue, seq("m", 0, 10)...)
	msgs := streamConsumer(t, conn, queue, "last")
	equal(t, takeOffsets(t, msgs, 1, "last"), []string{"m9@9"}, "last")
	publishEach(t, conn, queue, "m10")
	equal(t, takeOffsets(t, msgs, 1, "after last"), []string{"m10@10"}, "after last")
}

func TestStreamOffsetNext(t *testing.T) {
	for _, offset := range []interface{}{"next", nil} {
		conn := dial(t)
		queue := declareStream(t, conn, "stream-next")
		publishEach(t, conn, queue, seq("old", 0, 5)...)
		msgs := streamConsumer(t, conn, queue, offset)
		fresh := seq("new", 0, 3)
		publishEach(t, conn, queue, fresh...)
		equal(t, takeOffsets(t, msgs, 3, "new"), at(fresh, 5), fmt.Sprintf("offset %v", offset))
	}
}

func TestStreamOffsetTimestamp(t *testing.T) {
	conn := dial(t)
	queue := declareStream(t, conn, "stream-ts")
	publishEach(t, conn, queue, seq("before", 0, 3)...)
	// A timestamp offset has whole seconds: the next second boundary
	// separates the batches (a wait for the clock, not for the broker).
	boundary := time.Unix(time.Now().Unix()+1, 0)
	time.Sleep(time.Until(boundary) + 50*time.Millisecond)
	after := seq("after", 0, 3)
	publishEach(t, conn, queue, after...)
	equal(t, takeOffsets(t, streamConsumer(t, conn, queue, boundary), 3, "from timestamp"), at(after, 3), "timestamp")
	early := boundary.Add(-time.Hour)
	equal(t, takeOffsets(t, streamConsumer(t, conn, queue, early), 1, "early"), []string{"before0@0"}, "early timestamp")
}

func TestQuorumDeliveryLimitDeadLetters(t *testing.T) {
	conn := dial(t)
	ch := confirmChannel(t, conn)
	dlq, queue := unique("qq-dlq"), unique("qq-limit")
	deleteLater(t, "queue", dlq)
	deleteLater(t, "queue", queue)
	_, err := ch.QueueDeclare(dlq, false, false, false, false, nil)
	must(t, err, "dlq declare")
	_, err = ch.QueueDeclare(queue, true, false, false, false, amqp.Table{
		"x-queue-type": "quorum", "x-delivery-limit": int32(2),
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq,
	})
	must(t, err, "quorum declare")
	publishConfirmed(t, ch, "", queue, false, amqp.Publishing{Body: []byte("poison")})
	cch := channel(t, conn)
	msgs, err := cch.Consume(queue, "", false, false, false, false, nil)
	must(t, err, "consume")
	var seen []string
	for i := 0; i < 3; i++ {
		d := recv(t, msgs, "delivery")
		seen = append(seen, fmt.Sprintf("%v/%v", d.Redelivered, d.Headers["x-delivery-count"]))
		must(t, d.Nack(false, true), "nack")
	}
	equal(t, seen, []string{"false/<nil>", "true/1", "true/2"}, "deliveries")
	dl, err := ch.Consume(dlq, "", true, false, false, false, nil)
	must(t, err, "consume dlq")
	d := recv(t, dl, "dead-lettered")
	deaths, _ := d.Headers["x-death"].([]interface{})
	if string(d.Body) != "poison" || d.Headers["x-first-death-reason"] != "delivery_limit" ||
		d.Headers["x-first-death-queue"] != queue || len(deaths) != 1 {
		t.Fatalf("dead-lettered %q with headers %v", d.Body, d.Headers)
	}
	death, _ := deaths[0].(amqp.Table)
	if death["reason"] != "delivery_limit" || death["queue"] != queue || death["count"] != int64(1) {
		t.Fatalf("x-death %v", death)
	}
	select {
	case extra := <-msgs:
		t.Fatalf("delivered again after the limit: %+v", extra)
	default:
	}
}

// closedByConsumerTimeout declares a queue with args, leaves its one
// delivery unacked on a second channel, and checks that channel is closed
// with the 406 of a timeout of timeoutMs, no sooner, within wait. It
// returns the queue and the first channel.
func closedByConsumerTimeout(t *testing.T, conn *amqp.Connection, prefix string, args amqp.Table, timeoutMs int, wait time.Duration) (string, *amqp.Channel) {
	t.Helper()
	ch := channel(t, conn)
	queue := unique(prefix)
	deleteLater(t, "queue", queue)
	_, err := ch.QueueDeclare(queue, false, false, false, false, args)
	must(t, err, "declare")
	must(t, ch.Publish("", queue, false, false, amqp.Publishing{Body: []byte("slow")}), "publish")
	slow := channel(t, conn)
	closed := slow.NotifyClose(make(chan *amqp.Error, 1))
	msgs, err := slow.Consume(queue, "", false, false, false, false, nil)
	must(t, err, "consume")
	start := time.Now()
	recv(t, msgs, "the delivery left unacked")
	want := fmt.Sprintf("PRECONDITION_FAILED - delivery acknowledgement on channel 2 timed out. Timeout value used: %d ms.", timeoutMs)
	select {
	case e := <-closed:
		if e == nil || e.Code != 406 || !strings.HasPrefix(e.Reason, want) {
			t.Fatalf("channel closed with %v, want 406 %q", e, want)
		}
		if elapsed := time.Since(start); elapsed < time.Duration(timeoutMs)*time.Millisecond {
			t.Fatalf("closed after %v, before the timeout", elapsed)
		}
	case <-time.After(wait):
		t.Fatalf("channel not closed by the consumer timeout")
	}
	return queue, ch
}

func TestConsumerTimeoutClosesChannel(t *testing.T) {
	lepusOnly(t, "the x-consumer-timeout queue argument came with RabbitMQ 3.12")
	conn := dial(t)
	queue, ch := closedByConsumerTimeout(t, conn, "ctimeout", amqp.Table{"x-consumer-timeout": int32(500)}, 500, timeout)
	again, err := ch.Consume(queue, "", true, false, false, false, nil)
	must(t, err, "consume again")
	d := recv(t, again, "redelivery")
	if string(d.Body) != "slow" || !d.Redelivered {
		t.Fatalf("redelivery %+v", d)
	}
}

// The node's timeout (Lepus --consumer-timeout, RabbitMQ consumer_timeout,
// which RabbitMQ 3.10 checks once a minute): run only when
// CLIENTS_NODE_CONSUMER_TIMEOUT_MS names the broker's configured value.
func TestConsumerTimeoutNodeWide(t *testing.T) {
	ms, err := strconv.Atoi(os.Getenv("CLIENTS_NODE_CONSUMER_TIMEOUT_MS"))
	if err != nil || ms <= 0 {
		t.Skip("set CLIENTS_NODE_CONSUMER_TIMEOUT_MS to the broker's configured consumer timeout")
	}
	wait := time.Duration(ms)*time.Millisecond + 75*time.Second
	closedByConsumerTimeout(t, dial(t), "ctimeout-node", nil, ms, wait)
}

func TestDelayedExchange(t *testing.T) {
	lepusOnly(t, "no rabbitmq_delayed_message_exchange plugin")
	conn := dial(t)
	exchange, queue := unique("delayed"), unique("delayed-q")
	deleteLater(t, "exchange", exchange)
	deleteLater(t, "queue", queue)
	bad := channel(t, conn)
	var aerr *amqp.Error
	if err := bad.ExchangeDeclare(exchange, "x-delayed-message", false, false, false, false, nil); !errors.As(err, &aerr) || aerr.Code != 406 {
		t.Fatalf("declare without x-delayed-type: %v, want 406", err)
	}
	ch := confirmChannel(t, conn)
	must(t, ch.ExchangeDeclare(exchange, "x-delayed-message", false, false, false, false,
		amqp.Table{"x-delayed-type": "direct"}), "declare")
	_, err := ch.QueueDeclare(queue, false, false, false, false, nil)
	must(t, err, "queue declare")
	must(t, ch.QueueBind(queue, "k", exchange, false, nil), "bind")
	msgs, err := ch.Consume(queue, "", true, false, false, false, nil)
	must(t, err, "consume")
	sent := time.Now()
	publishConfirmed(t, ch, exchange, "k", false, amqp.Publishing{Body: []byte("late"), Headers: amqp.Table{"x-delay": int32(700)}})
	publishConfirmed(t, ch, exchange, "k", false, amqp.Publishing{Body: []byte("soon"), Headers: amqp.Table{"x-delay": int32(200)}})
	publishConfirmed(t, ch, exchange, "k", false, amqp.Publishing{Body: []byte("now")})
	var order []string
	for _, want := range []struct {
		body  string
		delay time.Duration
	}{{"now", 0}, {"soon", 200 * time.Millisecond}, {"late", 700 * time.Millisecond}} {
		d := recv(t, msgs, want.body)
		order = append(order, string(d.Body))
		if string(d.Body) != want.body {
			t.Fatalf("order %v", order)
		}
		if elapsed := time.Since(sent); elapsed < want.delay {
			t.Fatalf("%s delivered after %v, before its delay %v", d.Body, elapsed, want.delay)
		}
		if want.delay > 0 && fmt.Sprint(d.Headers["x-delay"]) != fmt.Sprint(-want.delay.Milliseconds()) {
			t.Fatalf("%s released with x-delay %v", d.Body, d.Headers["x-delay"])
		}
	}
}

func TestConsistentHashSpreadsByWeight(t *testing.T) {
	conn := dial(t)
	exchange := unique("chash")
	deleteLater(t, "exchange", exchange)
	probe := channel(t, conn)
	if err := probe.ExchangeDeclare(exchange, "x-consistent-hash", false, false, false, false, nil); err != nil {
		var aerr *amqp.Error
		if onRabbitMQ() && errors.As(err, &aerr) && aerr.Code == 503 {
			t.Skip("rabbitmq_consistent_hash_exchange is not enabled")
		}
		t.Fatalf("declare: %v", err)
	}
	ch := confirmChannel(t, conn)
	weights := []int{1, 2, 1}
	var queues []string
	for _, w := range weights {
		q, err := ch.QueueDeclare("", false, false, true, false, nil)
		must(t, err, "queue declare")
		must(t, ch.QueueBind(q.Name, fmt.Sprint(w), exchange, false, nil), "bind")
		queues = append(queues, q.Name)
	}
	const n = 4000
	for i := 0; i < n; i++ {
		must(t, ch.Publish(exchange, fmt.Sprintf("key-%d", i), false, false, amqp.Publishing{}), "publish")
	}
	for i := 0; i < n; i++ {
		select {
		case c := <-ch.acks:
			if !c.Ack {
				t.Fatalf("nack %+v", c)
			}
		case <-time.After(timeout):
			t.Fatalf("confirms: %d of %d", i, n)
		}
	}
	total := 0
	for i, q := range queues {
		d, err := ch.QueueDeclarePassive(q, false, false, true, false, nil)
		must(t, err, "passive declare")
		total += d.Messages
		share := float64(weights[i]) / 4
		if got := float64(d.Messages) / n; got < share-0.05 || got > share+0.05 {
			t.Fatalf("queue %d (weight %d) got %.3f of the messages, want %.3f", i, weights[i], got, share)
		}
	}
	if total != n {
		t.Fatalf("%d messages routed, want %d (each to exactly one queue)", total, n)
	}
}
