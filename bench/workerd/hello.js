export default {
  async fetch(request) {
    return new Response("hello world\n");
  },
};
