// Crossing closes: the broker closes a channel (404) while the client is
// closing the same channel. Re-expressed from amqp091-go's
// TestChannelExceptionWithCloseIssue43 (streadway/amqp issue 43): whichever
// order the two channel.close methods cross in, only that channel ends; the
// connection and its other channels go on.
package compat

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestCrossingChannelCloseKeepsConnection(t *testing.T) {
	conn := dial(t)
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))

	doomed := channel(t, conn)
	bystander := channel(t, conn)

	// A publish to a missing exchange makes the broker close `doomed` with
	// 404. Publish is asynchronous, so the broker's channel.close and the
	// client's own channel.close below cross on the wire, in either order.
	must(t, doomed.Publish(unique("no-such-exchange"), "", false, false, amqp.Publishing{}), "publish")
	// Either nil (our close won) or the broker's 404 (its close won).
	_ = doomed.Close()

	// The other channel must be untouched, and so must the connection.
	exchange := unique("after-crossing-close")
	must(t, bystander.ExchangeDeclare(exchange, "direct", false, true, false, false, nil),
		"exchange.declare on the second channel after the crossing close")
	must(t, bystander.ExchangeDelete(exchange, false, false), "exchange.delete")

	// And the connection can still open channels (reusing the closed number).
	again := channel(t, conn)
	must(t, again.Close(), "close of a fresh channel")

	select {
	case e := <-connClosed:
		t.Fatalf("connection closed by a crossing channel close: %v", e)
	case <-time.After(0):
	}
}
