/**
 * <message-list>: the scrolling list of chat rows. Scrolls to the newest row
 * when a row is appended (not when older rows are prepended) and offers a
 * "load earlier messages" action that fires `loadmore`.
 */
Component({
  properties: {
    messages: { type: Array, value: [] },
    hasMore: { type: Boolean, value: false },
    loading: { type: Boolean, value: false },
    emptyText: { type: String, value: 'No messages yet' }
  },
  data: { anchor: '' },
  observers: {
    messages(list) {
      const last = list.length ? list[list.length - 1].key : null
      if (last !== this._lastKey) {
        this._lastKey = last
        this.setData({ anchor: list.length ? 'm' + (list.length - 1) : '' })
      }
    }
  },
  methods: {
    onLoadMore() {
      if (!this.data.loading) this.triggerEvent('loadmore')
    }
  }
})
