// Client-compatibility tests with github.com/rabbitmq/amqp091-go (Debian's
// golang-github-rabbitmq-amqp091-go-dev, built in GOPATH mode from
// /usr/share/gocode). RabbitMQ tutorials 1-6 plus confirms, direct reply-to,
// mandatory returns and channel errors. No sleeps: every wait is a select on
// a channel with a timeout as safety net.
package compat

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const timeout = 10 * time.Second

func amqpURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/%2F"
}

func unique(prefix string) string {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "lepus-go-" + prefix + "-" + hex.EncodeToString(b)
}

func dial(t *testing.T) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(amqpURL())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func channel(t *testing.T, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	return ch
}

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// deleteLater removes named queues/exchanges after the test on a fresh connection.
func deleteLater(t *testing.T, kind, name string) {
	t.Cleanup(func() {
		conn, err := amqp.Dial(amqpURL())
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		if kind == "queue" {
			_, _ = ch.QueueDelete(name, false, false, false)
		} else {
			_ = ch.ExchangeDelete(name, false, false)
		}
	})
}

func recv(t *testing.T, c <-chan amqp.Delivery, what string) amqp.Delivery {
	t.Helper()
	select {
	case d, ok := <-c:
		if !ok {
			t.Fatalf("%s: delivery channel closed", what)
		}
		return d
	case <-time.After(timeout):
		t.Fatalf("timed out waiting for %s", what)
	}
	return amqp.Delivery{}
}

// confirmCh is a channel in confirm mode with its NotifyPublish listener.
// (Not PublishWithDeferredConfirm: in amqp091-go 1.5.0 it registers the
// deferred confirmation only after sending the publish, so a fast broker's
// basic.ack can arrive first and Wait() then never returns -- upstream #182.)
type confirmCh struct {
	*amqp.Channel
	acks chan amqp.Confirmation
}

func confirmChannel(t *testing.T, conn *amqp.Connection) confirmCh {
	ch := channel(t, conn)
	must(t, ch.Confirm(false), "confirm.select")
	return confirmCh{ch, ch.NotifyPublish(make(chan amqp.Confirmation, 1000))}
}

// publishConfirmed publishes and waits for the broker's ack.
func publishConfirmed(t *testing.T, ch confirmCh, exchange, key string, mandatory bool, msg amqp.Publishing) {
	t.Helper()
	tag := ch.GetNextPublishSeqNo()
	must(t, ch.Publish(exchange, key, mandatory, false, msg), "publish")
	select {
	case c := <-ch.acks:
		if c.DeliveryTag != tag || !c.Ack {
			t.Fatalf("publish to %q/%q: got confirmation %+v, want ack of %d", exchange, key, c, tag)
		}
	case <-time.After(timeout):
		t.Fatalf("timed out waiting for publisher confirm")
	}
}

type getter interface {
	Get(queue string, autoAck bool) (amqp.Delivery, bool, error)
}

func drain(t *testing.T, ch getter, queue string) []string {
	t.Helper()
	var out []string
	for i := 0; i < 1000; i++ {
		d, ok, err := ch.Get(queue, true)
		must(t, err, "basic.get")
		if !ok {
			return out
		}
		out = append(out, string(d.Body))
	}
	t.Fatalf("queue %s did not drain", queue)
	return nil
}

func equal(t *testing.T, got, want []string, what string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

func fib(n int) int {
	a, b := 0, 1
	for i := 0; i < n; i++ {
		a, b = b, a+b
	}
	return a
}

func TestServerProperties(t *testing.T) {
	conn := dial(t)
	caps, ok := conn.Properties["capabilities"].(amqp.Table)
	if !ok {
		t.Fatalf("no capabilities table in connection.start: %#v", conn.Properties)
	}
	for _, c := range []string{"publisher_confirms", "basic.nack", "consumer_cancel_notify", "exchange_exchange_bindings"} {
		if v, _ := caps[c].(bool); !v {
			t.Errorf("capability %s not advertised", c)
		}
	}
	if conn.Major != 0 || conn.Minor != 9 {
		t.Errorf("version %d-%d", conn.Major, conn.Minor)
	}
}

func TestT1HelloWorld(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	queue := unique("hello")
	deleteLater(t, "queue", queue)
	q, err := ch.QueueDeclare(queue, false, false, false, false, nil)
	must(t, err, "queue.declare")
	if q.Name != queue || q.Messages != 0 || q.Consumers != 0 {
		t.Fatalf("unexpected declare-ok %+v", q)
	}
	must(t, ch.Publish("", queue, false, false, amqp.Publishing{ContentType: "text/plain", Body: []byte("Hello World!")}), "publish")
	msgs, err := ch.Consume(queue, "", true, false, false, false, nil)
	must(t, err, "consume")
	d := recv(t, msgs, "hello world")
	if string(d.Body) != "Hello World!" || d.Exchange != "" || d.RoutingKey != queue || d.Redelivered || d.ContentType != "text/plain" {
		t.Fatalf("unexpected delivery %+v", d)
	}
}

func TestT2WorkQueuesFairDispatch(t *testing.T) {
	pconn, sconn, fconn := dial(t), dial(t), dial(t)
	producer := confirmChannel(t, pconn)
	queue := unique("task_queue")
	deleteLater(t, "queue", queue)
	_, err := producer.QueueDeclare(queue, true, false, false, false, nil)
	must(t, err, "declare")

	slow, fast := channel(t, sconn), channel(t, fconn)
	must(t, slow.Qos(1, 0, false), "qos")
	must(t, fast.Qos(1, 0, false), "qos")
	slowMsgs, err := slow.Consume(queue, "", false, false, false, false, nil)
	must(t, err, "consume")
	fastMsgs, err := fast.Consume(queue, "", false, false, false, false, nil)
	must(t, err, "consume")

	const n = 10
	for i := 0; i < n; i++ {
		publishConfirmed(t, producer, "", queue, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(fmt.Sprintf("task %d", i))})
	}
	var slowGot []amqp.Delivery
	var fastGot []string
	deadline := time.After(timeout)
	for len(slowGot)+len(fastGot) < n {
		select {
		case d := <-slowMsgs:
			slowGot = append(slowGot, d) // busy: never acks
		case d := <-fastMsgs:
			fastGot = append(fastGot, string(d.Body))
			must(t, d.Ack(false), "ack")
		case <-deadline:
			t.Fatalf("timed out: slow=%d fast=%d", len(slowGot), len(fastGot))
		}
	}
	if len(slowGot) != 1 || len(fastGot) != n-1 {
		t.Fatalf("prefetch(1) not honoured: slow=%d fast=%d", len(slowGot), len(fastGot))
	}
	held := string(slowGot[0].Body)
	must(t, sconn.Close(), "close slow worker")
	d := recv(t, fastMsgs, "redelivery after worker death")
	if string(d.Body) != held || !d.Redelivered {
		t.Fatalf("expected redelivered %q, got %q redelivered=%v", held, d.Body, d.Redelivered)
	}
	must(t, d.Ack(false), "ack")
}

func TestT3FanoutPubSub(t *testing.T) {
	c1, c2 := dial(t), dial(t)
	exchange := unique("logs")
	deleteLater(t, "exchange", exchange)
	pub := confirmChannel(t, c1)
	must(t, pub.ExchangeDeclare(exchange, "fanout", false, false, false, false, nil), "exchange.declare")
	publishConfirmed(t, pub, exchange, "", false, amqp.Publishing{Body: []byte("lost")})

	var subs []<-chan amqp.Delivery
	names := map[string]bool{}
	for _, c := range []*amqp.Connection{c1, c2} {
		ch := channel(t, c)
		q, err := ch.QueueDeclare("", false, false, true, false, nil)
		must(t, err, "declare server-named")
		if len(q.Name) < 8 || q.Name[:8] != "amq.gen-" {
			t.Fatalf("server-named queue %q", q.Name)
		}
		names[q.Name] = true
		must(t, ch.QueueBind(q.Name, "", exchange, false, nil), "bind")
		msgs, err := ch.Consume(q.Name, "", true, true, false, false, nil)
		must(t, err, "consume")
		subs = append(subs, msgs)
	}
	if len(names) != 2 {
		t.Fatalf("server-named queues not distinct")
	}
	for i := 0; i < 3; i++ {
		publishConfirmed(t, pub, exchange, "any", false, amqp.Publishing{Body: []byte(fmt.Sprintf("log %d", i))})
	}
	for _, s := range subs {
		var got []string
		for i := 0; i < 3; i++ {
			got = append(got, string(recv(t, s, "fanout delivery").Body))
		}
		equal(t, got, []string{"log 0", "log 1", "log 2"}, "fanout")
	}
}

func TestT4DirectRouting(t *testing.T) {
	conn := dial(t)
	ch := confirmChannel(t, conn)
	exchange := unique("direct_logs")
	deleteLater(t, "exchange", exchange)
	must(t, ch.ExchangeDeclare(exchange, "direct", false, false, false, false, nil), "declare")
	qErr, err := ch.QueueDeclare("", false, false, true, false, nil)
	must(t, err, "declare")
	qAll, err := ch.QueueDeclare("", false, false, true, false, nil)
	must(t, err, "declare")
	must(t, ch.QueueBind(qErr.Name, "error", exchange, false, nil), "bind")
	for _, s := range []string{"info", "warning", "error"} {
		must(t, ch.QueueBind(qAll.Name, s, exchange, false, nil), "bind")
	}
	for _, s := range []string{"info", "warning", "error", "debug"} {
		publishConfirmed(t, ch, exchange, s, false, amqp.Publishing{Body: []byte(s + " msg")})
	}
	equal(t, drain(t, ch, qErr.Name), []string{"error msg"}, "error queue")
	equal(t, drain(t, ch, qAll.Name), []string{"info msg", "warning msg", "error msg"}, "all queue")
}

func TestT5TopicRouting(t *testing.T) {
	conn := dial(t)
	ch := confirmChannel(t, conn)
	exchange := unique("topic_logs")
	deleteLater(t, "exchange", exchange)
	must(t, ch.ExchangeDeclare(exchange, "topic", false, false, false, false, nil), "declare")
	bind := func(keys ...string) string {
		q, err := ch.QueueDeclare("", false, false, true, false, nil)
		must(t, err, "declare")
		for _, k := range keys {
			must(t, ch.QueueBind(q.Name, k, exchange, false, nil), "bind")
		}
		return q.Name
	}
	q1 := bind("*.orange.*")
	q2 := bind("*.*.rabbit", "lazy.#")
	qAll := bind("#")
	qMid := bind("a.#.z")
	keys := []string{"quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
		"lazy.pink.rabbit", "quick.brown.fox", "orange", "quick.orange.male.rabbit",
		"lazy.orange.male.rabbit", "lazy", "a.z", "a.b.c.z", "a.b"}
	for _, k := range keys {
		publishConfirmed(t, ch, exchange, k, false, amqp.Publishing{Body: []byte(k)})
	}
	equal(t, drain(t, ch, q1), []string{"quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"}, "q1")
	equal(t, drain(t, ch, q2), []string{"quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
		"lazy.pink.rabbit", "lazy.orange.male.rabbit", "lazy"}, "q2")
	equal(t, drain(t, ch, qAll), keys, "#")
	equal(t, drain(t, ch, qMid), []string{"a.z", "a.b.c.z"}, "a.#.z")
}

func rpcServer(t *testing.T, conn *amqp.Connection, queue string) {
	ch := channel(t, conn)
	_, err := ch.QueueDeclare(queue, false, false, false, false, nil)
	must(t, err, "declare rpc queue")
	deleteLater(t, "queue", queue)
	must(t, ch.Qos(1, 0, false), "qos")
	msgs, err := ch.Consume(queue, "", false, false, false, false, nil)
	must(t, err, "consume")
	go func() {
		for d := range msgs {
			n, _ := strconv.Atoi(string(d.Body))
			_ = ch.Publish("", d.ReplyTo, false, false, amqp.Publishing{
				CorrelationId: d.CorrelationId, Body: []byte(strconv.Itoa(fib(n))),
			})
			_ = d.Ack(false)
		}
	}()
}

func TestT6RPC(t *testing.T) {
	cconn, sconn := dial(t), dial(t)
	rpcQueue := unique("rpc_queue")
	rpcServer(t, sconn, rpcQueue)

	ch := channel(t, cconn)
	cb, err := ch.QueueDeclare("", false, false, true, false, nil)
	must(t, err, "declare callback queue")
	replies, err := ch.Consume(cb.Name, "", true, false, false, false, nil)
	must(t, err, "consume")
	want := map[string]int{}
	for _, n := range []int{0, 1, 10, 30} {
		id := unique("corr")
		want[id] = fib(n)
		must(t, ch.Publish("", rpcQueue, false, false, amqp.Publishing{
			CorrelationId: id, ReplyTo: cb.Name, Body: []byte(strconv.Itoa(n)),
		}), "publish request")
	}
	for range want {
		d := recv(t, replies, "rpc reply")
		exp, ok := want[d.CorrelationId]
		if !ok {
			t.Fatalf("unknown correlation id %q", d.CorrelationId)
		}
		if string(d.Body) != strconv.Itoa(exp) {
			t.Fatalf("fib reply %q, want %d", d.Body, exp)
		}
		delete(want, d.CorrelationId)
	}
}

func TestDirectReplyTo(t *testing.T) {
	cconn, sconn := dial(t), dial(t)
	rpcQueue := unique("rpc_direct")
	rpcServer(t, sconn, rpcQueue)
	ch := channel(t, cconn)
	replies, err := ch.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil)
	must(t, err, "consume amq.rabbitmq.reply-to")
	for i := 0; i < 3; i++ {
		must(t, ch.Publish("", rpcQueue, false, false, amqp.Publishing{
			CorrelationId: fmt.Sprint(i), ReplyTo: "amq.rabbitmq.reply-to", Body: []byte(strconv.Itoa(10 + i)),
		}), "publish")
	}
	var got []string
	for i := 0; i < 3; i++ {
		d := recv(t, replies, "direct reply")
		if len(d.RoutingKey) <= len("amq.rabbitmq.reply-to.") || d.RoutingKey[:22] != "amq.rabbitmq.reply-to." {
			t.Fatalf("reply routing key %q", d.RoutingKey)
		}
		got = append(got, d.CorrelationId+"="+string(d.Body))
	}
	sort.Strings(got)
	equal(t, got, []string{"0=55", "1=89", "2=144"}, "direct replies")
}

func TestConfirmsAsync(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	queue := unique("confirms")
	deleteLater(t, "queue", queue)
	_, err := ch.QueueDeclare(queue, false, false, false, false, nil)
	must(t, err, "declare")
	must(t, ch.Confirm(false), "confirm.select")
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 500))
	const n = 300
	for i := 0; i < n; i++ {
		must(t, ch.Publish("", queue, false, false, amqp.Publishing{Body: []byte("m")}), "publish")
	}
	seen := map[uint64]bool{}
	for i := 0; i < n; i++ {
		select {
		case c := <-confirms:
			if !c.Ack {
				t.Fatalf("nack for %d", c.DeliveryTag)
			}
			seen[c.DeliveryTag] = true
		case <-time.After(timeout):
			t.Fatalf("timed out after %d confirms", i)
		}
	}
	for tag := uint64(1); tag <= n; tag++ {
		if !seen[tag] {
			t.Fatalf("no confirm for tag %d", tag)
		}
	}
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	must(t, err, "passive declare")
	if q.Messages != n {
		t.Fatalf("queue has %d messages, want %d", q.Messages, n)
	}
}

func TestMandatoryReturn(t *testing.T) {
	conn := dial(t)
	ch := channel(t, conn)
	exchange := unique("mandatory")
	deleteLater(t, "exchange", exchange)
	must(t, ch.ExchangeDeclare(exchange, "direct", false, false, false, false, nil), "declare")
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	must(t, ch.Publish(exchange, "nowhere", true, false, amqp.Publishing{MessageId: "m1", Body: []byte("bounce")}), "publish")
	select {
	case r := <-returns:
		if r.ReplyCode != 312 || r.ReplyText != "NO_ROUTE" || r.Exchange != exchange || r.RoutingKey != "nowhere" ||
			string(r.Body) != "bounce" || r.MessageId != "m1" {
			t.Fatalf("unexpected return %+v", r)
		}
	case <-time.After(timeout):
		t.Fatalf("no basic.return")
	}
}

func TestPassiveDeclareMissingQueue404ClosesChannelOnly(t *testing.T) {
	conn := dial(t)
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch := channel(t, conn)
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	_, err := ch.QueueDeclarePassive(unique("missing"), false, false, false, false, nil)
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Code != 404 || aerr.Server != true {
		t.Fatalf("expected server 404, got %v", err)
	}
	select {
	case e := <-chClosed:
		if e == nil || e.Code != 404 {
			t.Fatalf("channel close notification %v", e)
		}
	case <-time.After(timeout):
		t.Fatalf("no channel close notification")
	}
	if conn.IsClosed() {
		t.Fatalf("connection closed by a channel error")
	}
	ch2 := confirmChannel(t, conn)
	q, err := ch2.QueueDeclare("", false, false, true, false, nil)
	must(t, err, "declare after channel error")
	publishConfirmed(t, ch2, "", q.Name, false, amqp.Publishing{Body: []byte("still alive")})
	equal(t, drain(t, ch2, q.Name), []string{"still alive"}, "after error")
	select {
	case e := <-connClosed:
		t.Fatalf("connection closed: %v", e)
	default:
	}
}
