"""
Build fonts/NotoSansSC-subset.otf: the few hundred characters the Chinese lessons draw, cut out of
Noto Sans CJK SC Regular (Debian package fonts-noto-cjk), so that their figures show Chinese on any
machine without a system font.

    python fonts/subset.py          # from the repository root, after editing notebooks/zh/*.ipynb
    python fonts/subset.py PATH     # PATH: NotoSansCJK-Regular.ttc, when fontconfig cannot find it

The characters are BASE below, the Chinese ones of plots.py, and every character in the code
cells of notebooks/zh/*.ipynb.
The output is deterministic: the same characters give the same bytes.
Needs fontTools (a dependency of matplotlib); cjk.py, which uses the font, does not.
"""
import glob
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SOURCE_FAMILY = "Noto Sans CJK SC"  # a face of NotoSansCJK-Regular.ttc
OUTPUT = os.path.join(HERE, "NotoSansSC-subset.otf")
FAMILY = "Noto Sans SC Subset"  # a name of its own, so that a system-wide Noto CJK never shadows it
POSTSCRIPT_NAME = "NotoSansSCSubset-Regular"

# The toy tokens, the vocabulary of the lessons' titles, axes and legends, and punctuation.
BASE = "".join([
    "".join(chr(c) for c in range(0x20, 0x7F)),  # printable ASCII
    "，。：；！？（）、“”‘’《》「」【】…—～·×÷±≈≠≤≥→←↑↓−％",
    "小冬瓜",
    "概率 分布 温度 采样 抽样 贪心 随机 多项式 下一个 字符 词 元 文本 提示 续写 生成 解码 策略",
    "重复 惩罚 存在 频率 束 搜索 宽度 得分 对数 似然 长度 归一化 困惑度 熵 比特 信息 惊讶",
    "保留 移除 过滤 截断 累计 阈值 最大 最小 候选 集合 排名 前 后 个 数 真实 错误 正确",
    "之前 之后 模型 训练 参数 权重 次 步 每 轮 位置 时间 毫秒 秒 缓存 没有 有 速度 每秒",
    "草稿 接受 拒绝 残差 推测 偏置 类型 典型 目标 窗口 停止 结束 序列 批量 均值 方差 标准差",
    "的 和 与 在 中 为 是 不 了 也 都 就 把 被 从 到 对 比 更 最 很 个 种 些 这 那 哪 谁 什么 怎么 如何 为什么",
    "一 二 三 四 五 六 七 八 九 十 百 千 万 零 半 倍 上 下 左 右 大 小 多 少 高 低 长 短 快 慢 新 旧",
    "值 量 率 图 表 例 行 列 横 纵 轴 线 点 条 柱 颜色 蓝 橙 灰 红 绿 黑 白",
    "输入 输出 结果 比较 相同 不同 变化 增加 减少 越来越 平坦 尖锐 均匀 常见 罕见 稀有",
    "莎士比亚 单词 句子 字母 空格 换行 标点 重要 注意 看 选 取 给 用 让 会 能 可以 应该 只 总 共",
])


def code_characters(notebook_path):
    """Every character in the code cells of a Jupyter notebook."""
    with open(notebook_path, encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    sources = (cell["source"] for cell in cells if cell["cell_type"] == "code")
    return set("".join("".join(s) if isinstance(s, list) else s for s in sources))


def characters(root=ROOT):
    """The characters the font must hold: BASE, the Chinese of plots.py (its axis labels) and the
    code cells of root/notebooks/zh/*.ipynb, without whitespace other than the space, as one
    sorted string."""
    chars = set(BASE)
    if os.path.isfile(os.path.join(root, "plots.py")):
        with open(os.path.join(root, "plots.py"), encoding="utf-8") as f:
            chars |= set(re.findall(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]", f.read()))
    for path in sorted(glob.glob(os.path.join(root, "notebooks", "zh", "*.ipynb"))):
        chars |= code_characters(path)
    return "".join(sorted(c for c in chars if c == " " or not c.isspace()))


def face_number(ttc_path, family):
    """The index of the face called family in a font collection (.ttc)."""
    from fontTools.ttLib import TTCollection
    names = [face["name"].getDebugName(1) for face in TTCollection(ttc_path, lazy=True).fonts]
    return names.index(family)


def rename(font, family, postscript_name):
    """Give font (a Regular face) the family name family in its name and CFF tables."""
    names = {1: family, 3: f"{font['name'].getDebugName(3)};{postscript_name}",
             4: family, 6: postscript_name}
    for record in font["name"].names:
        if record.nameID in names:
            record.string = names[record.nameID]
    cff = font["CFF "].cff
    cff.fontNames = [postscript_name]
    cff.topDictIndex[0].FullName = family
    cff.topDictIndex[0].FamilyName = family


def build(text, source, output=OUTPUT):
    """Write the face SOURCE_FAMILY of source, cut down to the characters of text, to output:
    no hinting, no vertical writing, no alternate forms for other languages (only the layout
    features of horizontal text), the copyright and licence names kept."""
    from fontTools import subset
    options = subset.Options(hinting=False, desubroutinize=True, name_IDs=["*"],
                             layout_features=["ccmp", "kern", "liga", "mark", "mkmk"],
                             font_number=face_number(source, SOURCE_FAMILY))
    options.drop_tables += ["BASE", "VORG", "vhea", "vmtx"]
    font = subset.load_font(source, options)  # keeps head.modified: the same input, the same bytes
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=text)
    subsetter.subset(font)
    rename(font, FAMILY, POSTSCRIPT_NAME)
    subset.save_font(font, output, options)


def find_source():
    """The file that holds Noto Sans CJK SC on this machine, as fontconfig finds it; None when
    fontconfig is missing or offers another font in its place."""
    try:
        path = subprocess.run(["fc-match", "-f", "%{file}", SOURCE_FAMILY], capture_output=True, text=True).stdout
    except OSError:
        return None
    return path if os.path.basename(path).startswith("NotoSansCJK") else None


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else find_source()
    if not source or not os.path.isfile(source):
        sys.exit(f"{source or SOURCE_FAMILY} not found: install the Debian package fonts-noto-cjk "
                 "(apt-get install fonts-noto-cjk), or give the path of NotoSansCJK-Regular.ttc")
    text = characters()
    build(text, source)
    print(f"{os.path.relpath(OUTPUT)}: {len(text)} characters, {os.path.getsize(OUTPUT) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
