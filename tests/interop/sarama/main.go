// Command sarama_check runs sarama 1.22 (Debian's golang-github-shopify-sarama-dev, built in
// GOPATH mode) against a running Sluice broker, the way deployed tools of that age use it.
//
// With sarama's default config (Version 0.8.2): Metadata v0, ListOffsets v0 (Burrow's end
// offsets), a standalone offset manager (OffsetCommit v1 with no generation, OffsetFetch v1)
// whose commit a restarted manager resumes from, and WaitForAll producers (Produce v0,
// message format v0: plain, gzip and snappy wrappers) whose records the plain Consumer
// (Fetch v0) reads back in full. At Version 0.10.0 the same with lz4 and timestamps
// (Produce v2 / Fetch v2, message format v1). Sluice converts these formats at the edge.
// With the default config at Version 0.11 (the first with v2 record batches; sarama's
// ConsumerGroup needs at least 0.10.2): ClusterAdmin CreateTopic and ListTopics
// (Metadata v0 + DescribeConfigs v0), a WaitForAll producer, a two-member ConsumerGroup
// (JoinGroup v1, SyncGroup/Heartbeat/LeaveGroup v0, OffsetCommit v1 with the generation)
// that reads everything and commits, a restarted member that resumes at the commits, and
// ClusterAdmin DeleteRecords (v0) moving a partition's oldest offset (ListOffsets v0).
//
// Usage: sarama_check BOOTSTRAP [TOPIC_PREFIX]. Every wait is bounded; any failure exits 1.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const (
	partitions = 4
	count      = 200
	more       = 50
	timeout    = 60 * time.Second // bound on every wait
)

func fail(format string, args ...interface{}) {
	fmt.Printf("FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func ok(format string, args ...interface{}) {
	fmt.Printf("ok: "+format+"\n", args...)
}

// config is sarama's default config, with every network wait bounded by `timeout` and the
// protocol version set to `version`.
func config(version sarama.KafkaVersion) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = version
	c.ClientID = "sluice-sarama-check"
	c.Metadata.Retry.Max = 10
	c.Net.DialTimeout = 10 * time.Second
	c.Net.ReadTimeout = timeout
	c.Net.WriteTimeout = 10 * time.Second
	return c
}

// collector records which values a group member saw; owned by the test, shared by the
// members' ConsumeClaim goroutines under its mutex.
type collector struct {
	mu   sync.Mutex
	seen map[string]map[int]int // member -> value -> times seen
}

func (c *collector) add(member string, v int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[member] == nil {
		c.seen[member] = map[int]int{}
	}
	c.seen[member][v]++
}

// distinct counts the values in [lo, hi) seen by any member.
func (c *collector) distinct(lo, hi int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := map[int]bool{}
	for _, vs := range c.seen {
		for v := range vs {
			if v >= lo && v < hi {
				all[v] = true
			}
		}
	}
	return len(all)
}

// below lists values < limit seen by `member`.
func (c *collector) below(member string, limit int) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for v := range c.seen[member] {
		if v < limit {
			out = append(out, v)
		}
	}
	return out
}

// handler is one group member's ConsumerGroupHandler: it records and marks every message.
type handler struct {
	name string
	col  *collector
}

func (h handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		v, err := strconv.Atoi(strings.TrimPrefix(string(msg.Value), "v-"))
		if err != nil {
			fail("member %s: unexpected value %q", h.name, msg.Value)
		}
		h.col.add(h.name, v)
		s.MarkMessage(msg, "")
	}
	return nil
}

// groupMember joins `group` and consumes until its context is cancelled.
type groupMember struct {
	group  sarama.ConsumerGroup
	cancel context.CancelFunc
	done   chan struct{}
}

func startMember(bootstrap, group, topic, name string, col *collector) *groupMember {
	c := config(sarama.V0_11_0_0)
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Return.Errors = true
	g, err := sarama.NewConsumerGroup([]string{bootstrap}, group, c)
	if err != nil {
		fail("member %s: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &groupMember{group: g, cancel: cancel, done: make(chan struct{})}
	go func() {
		for err := range g.Errors() {
			log.Printf("member %s: %v", name, err)
		}
	}()
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, handler{name, col}); err != nil {
				log.Printf("member %s: consume: %v", name, err)
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	return m
}

// stop leaves the group (committing what was marked) within `timeout`.
func (m *groupMember) stop(name string) {
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(timeout):
		fail("member %s did not stop within %v", name, timeout)
	}
	closed := make(chan error, 1)
	go func() { closed <- m.group.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			fail("member %s: close: %v", name, err)
		}
	case <-time.After(timeout):
		fail("member %s did not close within %v", name, timeout)
	}
}

func waitFor(what string, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			fail("%s: not reached within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func produce(bootstrap, topic string, from, n int) {
	c := config(sarama.V0_11_0_0)
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	p, err := sarama.NewSyncProducer([]string{bootstrap}, c)
	if err != nil {
		fail("producer: %v", err)
	}
	defer p.Close()
	for i := from; i < from+n; i++ {
		msg := &sarama.ProducerMessage{
			Topic: topic,
			Key:   sarama.StringEncoder(fmt.Sprintf("k%d", i%17)),
			Value: sarama.StringEncoder(fmt.Sprintf("v-%d", i)),
		}
		if _, _, err := p.SendMessage(msg); err != nil {
			fail("produce v-%d (WaitForAll): %v", i, err)
		}
	}
}

// committed reads the group's committed offsets of every partition (OffsetFetch v1).
func committed(client sarama.Client, group, topic string) map[int32]int64 {
	coord, err := client.Coordinator(group)
	if err != nil {
		fail("coordinator of %s: %v", group, err)
	}
	req := &sarama.OffsetFetchRequest{Version: 1, ConsumerGroup: group}
	for p := int32(0); p < partitions; p++ {
		req.AddPartition(topic, p)
	}
	resp, err := coord.FetchOffset(req)
	if err != nil {
		fail("OffsetFetch v1 for %s: %v", group, err)
	}
	out := map[int32]int64{}
	for p := int32(0); p < partitions; p++ {
		b := resp.GetBlock(topic, p)
		if b == nil || b.Err != sarama.ErrNoError {
			fail("OffsetFetch v1 for %s/%d: %v", topic, p, b)
		}
		out[p] = b.Offset
	}
	return out
}

func endOffsets(client sarama.Client, topic string) map[int32]int64 {
	out := map[int32]int64{}
	for p := int32(0); p < partitions; p++ {
		off, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			fail("end offset of %s/%d: %v", topic, p, err)
		}
		out[p] = off
	}
	return out
}

func groups(bootstrap, prefix string) string {
	topic, group := prefix+"-topic", prefix+"-group"
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, config(sarama.V0_11_0_0))
	if err != nil {
		fail("cluster admin: %v", err)
	}
	defer admin.Close()
	retention := "7200000"
	detail := &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"retention.ms": &retention}}
	if err := admin.CreateTopic(topic, detail, false); err != nil {
		fail("CreateTopic v1: %v", err)
	}
	var listed sarama.TopicDetail
	waitFor("ListTopics shows "+topic, func() bool {
		topics, err := admin.ListTopics()
		if err != nil {
			fail("ListTopics (Metadata v0 + DescribeConfigs v0): %v", err)
		}
		listed = topics[topic]
		return listed.NumPartitions == partitions
	})
	if v := listed.ConfigEntries["retention.ms"]; v == nil || *v != retention {
		fail("ListTopics: %s configs %v, want retention.ms=%s", topic, listed.ConfigEntries, retention)
	}
	ok("ClusterAdmin: CreateTopic, ListTopics (DescribeConfigs v0) shows %d partitions and retention.ms", partitions)

	started := time.Now()
	produce(bootstrap, topic, 0, count)
	ok("produced %d records with WaitForAll", count)

	col := &collector{seen: map[string]map[int]int{}}
	a := startMember(bootstrap, group, topic, "a", col)
	b := startMember(bootstrap, group, topic, "b", col)
	waitFor("two members read every record", func() bool { return col.distinct(0, count) == count })
	client, err := sarama.NewClient([]string{bootstrap}, config(sarama.V0_11_0_0))
	if err != nil {
		fail("client: %v", err)
	}
	defer client.Close()
	ends := endOffsets(client, topic)
	waitFor("commits reach the end offsets", func() bool {
		c := committed(client, group, topic)
		for p, end := range ends {
			if c[p] != end {
				return false
			}
		}
		return true
	})
	ok("two members read all %d records and committed the end offsets %v", count, ends)

	// Sarama 1.22 leaves each batch's maxTimestamp at -1; the broker writes the records'
	// largest, as Kafka's validator does. Else the batches expire at the first retention
	// pass and ListOffsets by time never finds them.
	for p, end := range ends {
		if end == 0 {
			continue
		}
		off, err := client.GetOffset(topic, p, started.Add(-time.Minute).UnixNano()/1e6)
		if err != nil {
			fail("ListOffsets v1 by time of %s/%d: %v", topic, p, err)
		}
		if off != 0 {
			fail("ListOffsets v1 by time of %s/%d: %d, want its first record, 0", topic, p, off)
		}
	}
	ok("ListOffsets v1 by time finds the first record of every partition")

	// Restart one member; both must resume at the commits.
	b.stop("b")
	c := startMember(bootstrap, group, topic, "c", col)
	produce(bootstrap, topic, count, more)
	waitFor("the new records arrive", func() bool { return col.distinct(count, count+more) == more })
	if old := col.below("c", count); len(old) > 0 {
		fail("restarted member re-read %d committed records (e.g. v-%d)", len(old), old[0])
	}
	a.stop("a")
	c.stop("c")
	ok("restarted member resumed at the commits: %d new records, none of the %d committed", more, count)

	return topic
}

func defaults(bootstrap, prefix, topic string) {
	c := config(sarama.NewConfig().Version)
	client, err := sarama.NewClient([]string{bootstrap}, c) // Metadata v0
	if err != nil {
		fail("default-config client: %v", err)
	}
	defer client.Close()
	var total int64
	for p := int32(0); p < partitions; p++ {
		newest, err := client.GetOffset(topic, p, sarama.OffsetNewest) // ListOffsets v0
		if err != nil {
			fail("ListOffsets v0 newest %d: %v", p, err)
		}
		oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil || oldest != 0 {
			fail("ListOffsets v0 oldest %d: %d %v", p, oldest, err)
		}
		total += newest
	}
	if total != count+more {
		fail("ListOffsets v0 end offsets add up to %d, want %d", total, count+more)
	}
	ok("default config: ListOffsets v0 end offsets add up to %d", total)

	// ClusterAdmin.DeleteRecords (DeleteRecords v0): partition 0 loses its first half, and
	// ListOffsets v0 gives the new oldest offset
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, config(sarama.V0_11_0_0))
	if err != nil {
		fail("cluster admin: %v", err)
	}
	newest, err := client.GetOffset(topic, 0, sarama.OffsetNewest)
	if err != nil {
		fail("ListOffsets v0 newest 0: %v", err)
	}
	cut := newest / 2
	if err := admin.DeleteRecords(topic, map[int32]int64{0: cut}); err != nil {
		fail("DeleteRecords v0: %v", err)
	}
	_ = admin.Close()
	if oldest, err := client.GetOffset(topic, 0, sarama.OffsetOldest); err != nil || oldest != cut {
		fail("ListOffsets v0 oldest of partition 0 after DeleteRecords to %d: %d (%v)", cut, oldest, err)
	}
	ok("ClusterAdmin: DeleteRecords moved partition 0's oldest offset to %d", cut)

	// A standalone offset manager (OffsetCommit v1 with no generation, OffsetFetch v1).
	group := prefix + "-offsets"
	commitOnce := func(offset int64) {
		om, err := sarama.NewOffsetManagerFromClient(group, client)
		if err != nil {
			fail("offset manager: %v", err)
		}
		pom, err := om.ManagePartition(topic, 1)
		if err != nil {
			fail("manage partition: %v", err)
		}
		pom.MarkOffset(offset, "meta")
		closed := make(chan struct{})
		go func() { _ = pom.Close(); _ = om.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(timeout):
			fail("offset manager did not close within %v", timeout)
		}
	}
	commitOnce(7)
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		fail("offset manager: %v", err)
	}
	pom, err := om.ManagePartition(topic, 1)
	if err != nil {
		fail("manage partition: %v", err)
	}
	if next, meta := pom.NextOffset(); next != 7 || meta != "meta" {
		fail("restarted offset manager resumes at %d %q, want 7 \"meta\"", next, meta)
	}
	_ = pom.Close()
	_ = om.Close()
	ok("default config: offset manager committed (OffsetCommit v1) and a new one resumed at it")
}

// oldFormat produces `n` keyed records with `version`'s Produce (WaitForAll, `codec`) to a
// new one-partition topic in one SendMessages call (so compressed requests carry
// multi-message wrappers), then reads them back with the plain Consumer at `version`'s
// Fetch and checks every offset, key, value and (0.10+) timestamp.
func oldFormat(admin sarama.ClusterAdmin, bootstrap, topic string, version sarama.KafkaVersion,
	codec sarama.CompressionCodec, n int) {
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		fail("CreateTopic %s: %v", topic, err)
	}
	pc := config(version)
	pc.Producer.RequiredAcks = sarama.WaitForAll
	pc.Producer.Compression = codec
	pc.Producer.Return.Successes = true
	p, err := sarama.NewSyncProducer([]string{bootstrap}, pc)
	if err != nil {
		fail("%s producer: %v", topic, err)
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{
			Topic:     topic,
			Key:       sarama.StringEncoder(fmt.Sprintf("k%d", i)),
			Value:     sarama.StringEncoder(fmt.Sprintf("%s-%d", topic, i)),
			Timestamp: base.Add(time.Duration(i) * time.Millisecond),
		}
	}
	if err := p.SendMessages(msgs); err != nil {
		fail("%s: produce (WaitForAll): %v", topic, err)
	}
	_ = p.Close()

	client, err := sarama.NewClient([]string{bootstrap}, config(version))
	if err != nil {
		fail("%s client: %v", topic, err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		fail("%s consumer: %v", topic, err)
	}
	defer consumer.Close()
	part, err := consumer.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		fail("%s: ConsumePartition: %v", topic, err)
	}
	defer part.Close()
	deadline := time.After(timeout)
	for i := 0; i < n; i++ {
		select {
		case m := <-part.Messages():
			key, value := fmt.Sprintf("k%d", i), fmt.Sprintf("%s-%d", topic, i)
			if m.Offset != int64(i) || string(m.Key) != key || string(m.Value) != value {
				fail("%s: message %d is offset %d %q=%q, want %q=%q", topic, i, m.Offset, m.Key, m.Value, key, value)
			}
			if version.IsAtLeast(sarama.V0_10_0_0) && !m.Timestamp.Equal(msgs[i].Timestamp) {
				fail("%s: message %d has timestamp %v, want %v", topic, i, m.Timestamp, msgs[i].Timestamp)
			}
		case err := <-part.Errors():
			fail("%s: consume: %v", topic, err)
		case <-deadline:
			fail("%s: %d of %d messages within %v", topic, i, n, timeout)
		}
	}
	ok("Version %v: %d records produced (WaitForAll, %v) and consumed back in order", version, n, codec)
}

func oldFormats(bootstrap, prefix string) {
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, config(sarama.V0_11_0_0))
	if err != nil {
		fail("cluster admin: %v", err)
	}
	defer admin.Close()
	defaultVersion := sarama.NewConfig().Version // 0.8.2: Produce v0, Fetch v0
	oldFormat(admin, bootstrap, prefix+"-v0-none", defaultVersion, sarama.CompressionNone, 300)
	oldFormat(admin, bootstrap, prefix+"-v0-gzip", defaultVersion, sarama.CompressionGZIP, 300)
	oldFormat(admin, bootstrap, prefix+"-v0-snappy", defaultVersion, sarama.CompressionSnappy, 300)
	oldFormat(admin, bootstrap, prefix+"-v1-lz4", sarama.V0_10_0_0, sarama.CompressionLZ4, 300)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: sarama_check BOOTSTRAP [TOPIC_PREFIX]")
	}
	bootstrap := os.Args[1]
	prefix := fmt.Sprintf("sarama-%d", time.Now().UnixNano()%1000000)
	if len(os.Args) > 2 {
		prefix = os.Args[2]
	}
	if os.Getenv("SARAMA_DEBUG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags)
	}
	topic := groups(bootstrap, prefix)
	defaults(bootstrap, prefix, topic)
	oldFormats(bootstrap, prefix)
	fmt.Println("ok: sarama 1.22 (default config, and Version 0.11) against Sluice")
}
